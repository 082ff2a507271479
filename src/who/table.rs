//! doveadm 2.3's `table` output formatter, reproduced byte for byte from observation of
//! stock `doveadm who` 2.3.19.1 (several hundred random tables compared):
//!
//! - Text length is counted in characters: bytes that are not UTF-8 continuation bytes
//!   (`0b10xx_xxxx`), so invalid UTF-8 still counts one per lead byte.
//! - Widths are measured over the header titles and the first *measured* rows only; later
//!   rows reuse them (`doveadm who -1` measures the first 100 rows, aggregated `doveadm who`
//!   only its first row). For each column `max`/`min` are the longest/shortest of its title
//!   and measured values, and `N = Σmax + (columns − 1)` (one space between columns).
//! - `N ≤ screen`: every column gets `max`, and the *expand* column gets `(screen − N) / 2`
//!   more (integer division).
//! - `N > screen`, `over = N − screen`: walk the columns from the last to the first. The
//!   first column whose slack `max − min` is at least `over` gets `max − over` and the walk
//!   stops; every column passed before it gets `max − max(1, slack / 2)`. (Remaining columns
//!   keep `max`; the result may well be narrower than the screen.)
//! - Each cell is padded with spaces up to its width (on the left for right-justified
//!   columns), never truncated; columns are separated by one space; the last column is
//!   padded too. The header row is formatted like any row.
//! - The screen is 80 columns when stdout is not a terminal, else the terminal width but at
//!   least 30.

/// One column: its title and whether values are right-justified.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Column {
    pub title: &'static str,
    pub right: bool,
}

impl Column {
    /// A left-justified column.
    pub const fn left(title: &'static str) -> Column {
        Column {
            title,
            right: false,
        }
    }

    /// A right-justified column.
    pub const fn right(title: &'static str) -> Column {
        Column { title, right: true }
    }
}

/// Screen width when stdout is not a terminal.
pub const DEFAULT_SCREEN: usize = 80;
/// The narrowest screen doveadm assumes on a terminal.
pub const MIN_SCREEN: usize = 30;

/// Display length: bytes that are not UTF-8 continuation bytes.
pub fn text_len(text: &[u8]) -> usize {
    text.iter().filter(|&&b| b & 0xc0 != 0x80).count()
}

/// Column widths for `rows` (only the first `measured` rows count).
pub fn widths<R: AsRef<[u8]>>(
    columns: &[Column],
    rows: &[Vec<R>],
    measured: usize,
    expand: usize,
    screen: usize,
) -> Vec<usize> {
    let n = columns.len();
    let mut max: Vec<usize> = columns
        .iter()
        .map(|c| text_len(c.title.as_bytes()))
        .collect();
    let mut min = max.clone();
    for row in rows.iter().take(measured) {
        for (i, value) in row.iter().enumerate().take(n) {
            let len = text_len(value.as_ref());
            max[i] = max[i].max(len);
            min[i] = min[i].min(len);
        }
    }
    let total = max.iter().sum::<usize>() + n.saturating_sub(1);
    let mut width = max.clone();
    if total <= screen {
        if let Some(w) = width.get_mut(expand) {
            *w += (screen - total) / 2;
        }
        return width;
    }
    let over = total - screen;
    for i in (0..n).rev() {
        let slack = max[i] - min[i];
        if slack >= over {
            width[i] = max[i] - over;
            break;
        }
        width[i] = max[i].saturating_sub((slack / 2).max(1));
    }
    width
}

/// Renders the header and all rows with the given widths.
pub fn render<R: AsRef<[u8]>>(
    columns: &[Column],
    rows: &[Vec<R>],
    width: &[usize],
    out: &mut Vec<u8>,
) {
    let titles: Vec<&[u8]> = columns.iter().map(|c| c.title.as_bytes()).collect();
    render_row(columns, &titles, width, out);
    for row in rows {
        render_row(columns, row, width, out);
    }
}

fn render_row<R: AsRef<[u8]>>(columns: &[Column], row: &[R], width: &[usize], out: &mut Vec<u8>) {
    for (i, (column, value)) in columns.iter().zip(row).enumerate() {
        let value = value.as_ref();
        let pad = width[i].saturating_sub(text_len(value));
        if column.right {
            out.resize(out.len() + pad, b' ');
            out.extend_from_slice(value);
        } else {
            out.extend_from_slice(value);
            out.resize(out.len() + pad, b' ');
        }
        if i + 1 < columns.len() {
            out.push(b' ');
        }
    }
    out.push(b'\n');
}

/// Measures the first `measured` rows, then writes the header and every row; rows after the
/// measured ones are streamed (an endless iterator is fine).
pub fn write_table<W, I, R>(
    columns: &[Column],
    rows: I,
    measured: usize,
    expand: usize,
    screen: usize,
    out: &mut W,
) -> std::io::Result<()>
where
    W: std::io::Write + ?Sized,
    I: IntoIterator<Item = Vec<R>>,
    R: AsRef<[u8]>,
{
    let mut rows = rows.into_iter();
    let head: Vec<Vec<R>> = rows.by_ref().take(measured).collect();
    let width = widths(columns, &head, measured, expand, screen);
    let mut buf = Vec::new();
    render(columns, &head, &width, &mut buf);
    out.write_all(&buf)?;
    for row in rows {
        buf.clear();
        render_row(columns, &row, &width, &mut buf);
        out.write_all(&buf)?;
    }
    Ok(())
}

/// Measures and renders in one go.
pub fn table<R: AsRef<[u8]>>(
    columns: &[Column],
    rows: &[Vec<R>],
    measured: usize,
    expand: usize,
    screen: usize,
) -> Vec<u8> {
    let width = widths(columns, rows, measured, expand, screen);
    let mut out = Vec::new();
    render(columns, rows, &width, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const ONE: [Column; 4] = crate::who::SESSION_COLUMNS;

    fn one(rows: &[[&str; 4]]) -> String {
        let rows: Vec<Vec<&[u8]>> = rows
            .iter()
            .map(|r| r.iter().map(|s| s.as_bytes()).collect())
            .collect();
        String::from_utf8(table(&ONE, &rows, 100, 0, 80)).unwrap()
    }

    #[test]
    fn text_len_counts_lead_bytes() {
        assert_eq!(text_len(b"abc"), 3);
        assert_eq!(text_len("äääää".as_bytes()), 5);
        assert_eq!(text_len(b"\xe2\x82"), 1);
        assert_eq!(text_len(b"a\x80\x80b"), 2);
        assert_eq!(text_len(b"\xf0\x9f\x98\x80z"), 2);
        assert_eq!(text_len(b"a\xff\xfeb"), 4);
    }

    // Expected outputs below are stock `doveadm who -1` 2.3.19.1 output, byte for byte.

    #[test]
    fn fits_expand_column_gets_half_the_rest() {
        assert_eq!(
            one(&[["a", "imap", "1", "127.0.0.1"]]),
            "username                           proto pid ip       \n\
             a                                  imap  1   127.0.0.1\n"
        );
    }

    #[test]
    fn empty_table() {
        assert_eq!(
            one(&[]),
            "username                              proto pid ip\n"
        );
    }

    #[test]
    fn last_column_absorbs_the_overflow() {
        let user = "u".repeat(61);
        assert_eq!(
            one(&[[&user, "imap", "1", "127.0.0.1"]]),
            format!(
                "username{} proto pid ip      \n{user} imap  1   127.0.0.1\n",
                " ".repeat(53)
            )
        );
    }

    #[test]
    fn overflow_beyond_the_last_column_halves_the_slack() {
        // widths 60, 4, 2, 6: header cells overflow too.
        let user = "u".repeat(75);
        assert_eq!(
            one(&[[&user, "imap", "1", "127.0.0.1"]]),
            format!(
                "username{} proto pid ip    \n{user} imap 1  127.0.0.1\n",
                " ".repeat(52)
            )
        );
    }

    #[test]
    fn only_measured_rows_count() {
        let rows: Vec<Vec<&[u8]>> = vec![
            vec![b"a", b"1", b"imap", b"(1)", b"(127.0.0.1)"],
            vec![b"b", b"1", b"pop3", b"(12345678)", b"(127.0.0.1)"],
        ];
        let cols = crate::who::GROUP_COLUMNS;
        assert_eq!(
            String::from_utf8(table(&cols, &rows, 1, 4, 80)).unwrap(),
            "username # proto (pids) (ips)                            \n\
             a        1 imap  (1)    (127.0.0.1)                      \n\
             b        1 pop3  (12345678) (127.0.0.1)                      \n"
        );
    }

    #[test]
    fn right_justified_count_column() {
        let rows: Vec<Vec<&[u8]>> = vec![
            vec![
                b"alice",
                b"12",
                b"imap",
                b"(10 5 4 7 6 1 3 2 12 9 8 11)",
                b"(127.0.0.1)",
            ],
            vec![b"bob", b"1", b"imap", b"(1)", b"(127.0.0.1)"],
        ];
        let cols = crate::who::GROUP_COLUMNS;
        assert_eq!(
            String::from_utf8(table(&cols, &rows, 1, 4, 80)).unwrap(),
            "username  # proto (pids)                       (ips)                 \n\
             alice    12 imap  (10 5 4 7 6 1 3 2 12 9 8 11) (127.0.0.1)           \n\
             bob       1 imap  (1)                          (127.0.0.1)           \n"
        );
    }
}
