//! The results table: one row per figure, stock and Foreman side by side, the ratio
//! Foreman/stock, the target and a pass/miss mark. A missed target is reported, never an error.

use std::fmt::Write as _;

/// How a figure is printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    /// Operations per second.
    PerSec,
    /// A latency or duration, stored in seconds.
    Seconds,
    /// Bytes.
    Bytes,
    /// A plain count (instructions).
    Count,
    /// A small number with two decimals (processes per login).
    Decimal,
}

/// One side's figure.
#[derive(Debug, Clone, PartialEq)]
pub enum Figure {
    Value(f64),
    /// Not measured, and why.
    Missing(String),
}

/// A ratio target: Foreman/stock must be at least (or at most) `ratio`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Target {
    AtLeast(f64),
    AtMost(f64),
}

impl Target {
    pub(crate) fn text(self) -> String {
        match self {
            Target::AtLeast(r) => format!(">= {}x", trim(r)),
            Target::AtMost(r) => format!("<= {}x", trim(r)),
        }
    }

    pub(crate) fn met(self, ratio: f64) -> bool {
        match self {
            Target::AtLeast(r) => ratio >= r,
            Target::AtMost(r) => ratio <= r,
        }
    }
}

fn trim(r: f64) -> String {
    if (r - 1.0 / 3.0).abs() < 1e-9 {
        return "1/3".into();
    }
    let s = format!("{r:.2}");
    s.trim_end_matches('0').trim_end_matches('.').to_owned()
}

/// One line of the table.
#[derive(Debug, Clone)]
pub struct Row {
    pub label: String,
    pub unit: Unit,
    pub stock: Figure,
    pub foreman: Figure,
    pub target: Option<Target>,
}

impl Row {
    pub fn new(label: impl Into<String>, unit: Unit, target: Option<Target>) -> Row {
        Row {
            label: label.into(),
            unit,
            stock: Figure::Missing("not run".into()),
            foreman: Figure::Missing("not run".into()),
            target,
        }
    }

    /// Both figures missing for the same reason.
    pub fn missing(mut self, why: &str) -> Row {
        self.stock = Figure::Missing(why.into());
        self.foreman = Figure::Missing(why.into());
        self
    }

    pub fn values(mut self, stock: f64, foreman: f64) -> Row {
        self.stock = Figure::Value(stock);
        self.foreman = Figure::Value(foreman);
        self
    }

    fn ratio(&self) -> Option<f64> {
        match (&self.stock, &self.foreman) {
            (Figure::Value(s), Figure::Value(f)) if *s > 0.0 => Some(f / s),
            _ => None,
        }
    }

    /// `Some(true)` met, `Some(false)` missed, `None` no target or not measured.
    pub fn verdict(&self) -> Option<bool> {
        Some(self.target?.met(self.ratio()?))
    }
}

/// Formats a figure with its unit (`1.23 M/s`, `35.0 us`, `148.3 B`, `4,636`).
pub fn format_figure(unit: Unit, figure: &Figure) -> String {
    let v = match figure {
        Figure::Value(v) => *v,
        Figure::Missing(why) => return why.clone(),
    };
    match unit {
        Unit::PerSec if v >= 1e6 => format!("{:.2} M/s", v / 1e6),
        Unit::PerSec if v >= 1e3 => format!("{:.1} k/s", v / 1e3),
        Unit::PerSec => format!("{v:.1}/s"),
        Unit::Seconds if v >= 1.0 => format!("{v:.2} s"),
        Unit::Seconds if v >= 1e-3 => format!("{:.1} ms", v * 1e3),
        Unit::Seconds => format!("{:.1} us", v * 1e6),
        Unit::Bytes => format!("{v:.1} B"),
        Unit::Count => thousands(v.round() as i64),
        Unit::Decimal => format!("{v:.2}"),
    }
}

fn thousands(n: i64) -> String {
    let digits = n.unsigned_abs().to_string();
    let mut out = String::new();
    if n < 0 {
        out.push('-');
    }
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// `PASS`, `MISS` or nothing.
pub(crate) fn verdict_text(verdict: Option<bool>) -> &'static str {
    match verdict {
        Some(true) => "PASS",
        Some(false) => "MISS",
        None => "",
    }
}

/// The whole table as text.
pub fn render(rows: &[Row]) -> String {
    let header = ["figure", "stock", "foreman", "foreman/stock", "target", ""];
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            vec![
                r.label.clone(),
                format_figure(r.unit, &r.stock),
                format_figure(r.unit, &r.foreman),
                r.ratio().map_or("-".into(), |x| format!("{x:.2}x")),
                r.target.map_or("-".into(), Target::text),
                verdict_text(r.verdict()).into(),
            ]
        })
        .collect();
    align(&header, &cells)
}

/// Text columns: the first left-aligned, the others right-aligned, two spaces apart.
pub(crate) fn align(header: &[&str], cells: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in cells {
        for (w, c) in widths.iter_mut().zip(row) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cols: &[String]| {
        let mut s = String::new();
        for (i, (c, &w)) in cols.iter().zip(&widths).enumerate() {
            if i == 0 {
                let _ = write!(s, "{c:<w$}");
            } else {
                let _ = write!(s, "  {c:>w$}");
            }
        }
        let _ = writeln!(out, "{}", s.trim_end());
    };
    line(&header.iter().map(|h| (*h).to_owned()).collect::<Vec<_>>());
    for row in cells {
        line(row);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn figures_and_verdicts() {
        assert_eq!(
            format_figure(Unit::PerSec, &Figure::Value(840_000.0)),
            "840.0 k/s"
        );
        assert_eq!(
            format_figure(Unit::PerSec, &Figure::Value(2_410_000.0)),
            "2.41 M/s"
        );
        assert_eq!(
            format_figure(Unit::Seconds, &Figure::Value(35e-6)),
            "35.0 us"
        );
        assert_eq!(
            format_figure(Unit::Seconds, &Figure::Value(0.0123)),
            "12.3 ms"
        );
        assert_eq!(format_figure(Unit::Count, &Figure::Value(4636.4)), "4,636");
        assert_eq!(format_figure(Unit::Count, &Figure::Value(999.0)), "999");

        let row = Row::new("x", Unit::PerSec, Some(Target::AtLeast(2.0))).values(1.0, 2.5);
        assert_eq!(row.verdict(), Some(true));
        let row = Row::new("x", Unit::Bytes, Some(Target::AtMost(0.5))).values(100.0, 60.0);
        assert_eq!(row.verdict(), Some(false));
        let row = Row::new("x", Unit::Bytes, Some(Target::AtMost(0.5))).missing("skipped");
        assert_eq!(row.verdict(), None);
        assert_eq!(Target::AtMost(1.0 / 3.0).text(), "<= 1/3x");
        assert_eq!(Target::AtLeast(1.5).text(), ">= 1.5x");
    }

    #[test]
    fn table_has_a_line_per_row() {
        let rows = [
            Row::new("pairs/s", Unit::PerSec, Some(Target::AtLeast(2.0))).values(1e6, 3e6),
            Row::new("dump", Unit::Seconds, None).missing("skipped"),
        ];
        let text = render(&rows);
        assert_eq!(text.lines().count(), 3);
        assert!(text.lines().nth(1).unwrap().ends_with("PASS"));
        assert!(text.contains("skipped"));
    }
}
