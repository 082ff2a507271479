//! `foreman who --processes`: the reuse processes of a Foreman anvil's registry, per user,
//! with state, how long the state has held (for an idle process: its idle time) and claim.
//!
//! Flow: [`super::fetch`] with [`REQUEST`] (the `foreman-anvil` handshake and one
//! `PROC-DUMP`, `docs/anvil-extensions.md` §3) → [`parse_proc_dump`] → [`groups`] (bound
//! users by name, then the unbound processes: `(fresh)` spares, then `(unbound)` ones that
//! served somebody the registry does not know) → [`write_table`] / [`write_json`].
//! Durations are `now − since` with `now` passed in (the caller's wall clock).
//!
//! A user mask selects bound users (the unbound rows are shown only without one); a network
//! mask is a usage error, processes have no IP.

use std::io::Write;

use bstr::BString;

use super::table::{self, Column};
use super::Filter;
use crate::wire::anvil_ext::{
    decode_proc_row, ClaimState, ExtReply, ExtReplyError, ProcRow, ProcState, VERSION_LINE,
};
use crate::wire::DecodeError;

/// What `foreman who --processes` sends, in one write.
pub const REQUEST: &[u8] = b"VERSION\tforeman-anvil\t1\t0\nPROC-DUMP\n";

/// The label of the unbound fresh processes (spares nobody was handed).
pub const FRESH_LABEL: &str = "(fresh)";
/// The label of unbound processes that are not fresh (they served a user the registry does
/// not know, e.g. before a `CONNECT` reached anvil).
pub const UNBOUND_LABEL: &str = "(unbound)";

/// A parsed `PROC-DUMP` reply.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProcDump {
    pub rows: Vec<ProcRow>,
    /// Rows that did not parse, raw.
    pub invalid: Vec<BString>,
}

/// Why a reply is not a foreman-anvil `PROC-DUMP`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProcDumpError {
    /// No `foreman-anvil` greeting: not a Foreman anvil.
    NoGreeting,
    /// The terminating empty line is missing.
    Truncated,
}

/// Parses the greeting and the rows up to the empty line (bytes after it are ignored).
pub fn parse_proc_dump(bytes: &[u8]) -> Result<ProcDump, ProcDumpError> {
    let Some(mut bytes) = bytes.strip_prefix(VERSION_LINE) else {
        return Err(if VERSION_LINE.starts_with(bytes) {
            ProcDumpError::Truncated
        } else {
            ProcDumpError::NoGreeting
        });
    };
    let mut dump = ProcDump::default();
    loop {
        match decode_proc_row(bytes) {
            Ok((_, ExtReply::End)) => return Ok(dump),
            Ok((consumed, ExtReply::Row(row))) => {
                dump.rows.push(row);
                bytes = &bytes[consumed..];
            }
            Ok((consumed, _)) => {
                dump.invalid.push(bytes[..consumed - 1].into());
                bytes = &bytes[consumed..];
            }
            Err(DecodeError::Invalid(ExtReplyError(raw))) => {
                bytes = &bytes[raw.len() + 1..];
                dump.invalid.push(raw);
            }
            Err(DecodeError::Incomplete) => return Err(ProcDumpError::Truncated),
        }
    }
}

/// Whom a group of processes belongs to.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Owner {
    User(BString),
    /// Unbound and fresh.
    Fresh,
    /// Unbound, not fresh.
    Unbound,
}

impl Owner {
    fn of(row: &ProcRow) -> Owner {
        match (row.user.is_empty(), row.state) {
            (false, _) => Owner::User(row.user.clone()),
            (true, ProcState::Fresh) => Owner::Fresh,
            (true, _) => Owner::Unbound,
        }
    }

    /// The username column.
    fn label(&self) -> &[u8] {
        match self {
            Owner::User(user) => user,
            Owner::Fresh => FRESH_LABEL.as_bytes(),
            Owner::Unbound => UNBOUND_LABEL.as_bytes(),
        }
    }
}

/// The processes of one owner, by service then pid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group<'a> {
    pub owner: Owner,
    pub processes: Vec<&'a ProcRow>,
}

/// Groups the rows the filter passes: users by name (bytes), then `(fresh)`, then
/// `(unbound)`; within a group by service, then pid.
pub fn groups<'a>(dump: &'a ProcDump, filter: &Filter) -> Vec<Group<'a>> {
    let mut map: std::collections::BTreeMap<Owner, Vec<&ProcRow>> = Default::default();
    for row in &dump.rows {
        let owner = Owner::of(row);
        let passes = match &owner {
            Owner::User(user) => filter.user_matches(user),
            Owner::Fresh | Owner::Unbound => filter.user_mask.is_none(),
        };
        if passes {
            map.entry(owner).or_default().push(row);
        }
    }
    map.into_iter()
        .map(|(owner, mut processes)| {
            processes.sort_by(|a, b| a.service.cmp(&b.service).then(a.pid.cmp(&b.pid)));
            Group { owner, processes }
        })
        .collect()
}

fn state_text(state: ProcState) -> &'static str {
    match state {
        ProcState::Fresh => "fresh",
        ProcState::Idle => "idle",
        ProcState::Busy => "busy",
    }
}

fn claim_text(claim: ClaimState) -> Option<&'static str> {
    match claim {
        ClaimState::None => None,
        ClaimState::Claimed => Some("claimed"),
        ClaimState::Evicting => Some("evicting"),
    }
}

/// The uid, `None` when bound with an unknown uid (the registry reports 0 then: a claim
/// never binds uid 0).
fn known_uid(row: &ProcRow) -> Option<u32> {
    (row.user.is_empty() || row.uid != 0).then_some(row.uid)
}

/// `now − since` in ms (0 if the clocks disagree).
pub fn age_ms(now: u64, row: &ProcRow) -> u64 {
    now.saturating_sub(row.since)
}

/// A short duration: `42s`, `3m05s`, `5h03m`, `2d03h`.
pub fn format_duration(ms: u64) -> String {
    let s = ms / 1000;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        3600..86400 => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d{:02}h", s / 86400, s % 86400 / 3600),
    }
}

/// The columns of the table.
pub(crate) const COLUMNS: [Column; 7] = [
    Column::left("username"),
    Column::left("proto"),
    Column::right("pid"),
    Column::right("uid"),
    Column::left("state"),
    Column::right("for"),
    Column::left("claim"),
];

/// The table: one row per process, the owner's label on each; the layout rules of
/// [`table`] with every row measured and the username column expanded.
pub fn write_table<W: Write + ?Sized>(
    dump: &ProcDump,
    filter: &Filter,
    now: u64,
    screen: usize,
    out: &mut W,
) -> std::io::Result<()> {
    let rows: Vec<Vec<Vec<u8>>> = groups(dump, filter)
        .iter()
        .flat_map(|g| {
            g.processes.iter().map(|p| {
                vec![
                    g.owner.label().to_vec(),
                    p.service.to_vec(),
                    p.pid.to_string().into_bytes(),
                    known_uid(p)
                        .map_or("?".into(), |u| u.to_string())
                        .into_bytes(),
                    state_text(p.state).into(),
                    format_duration(age_ms(now, p)).into_bytes(),
                    claim_text(p.claim).unwrap_or("-").into(),
                ]
            })
        })
        .collect();
    out.write_all(&table::table(&COLUMNS, &rows, rows.len(), 0, screen))
}

/// `--json`: an array of groups, `{"username": <name or null>, "group": "user" | "fresh" |
/// "unbound", "processes": [{"pid", "service", "uid" (null: unknown), "state", "since"
/// (unix ms), "for_ms", "claim" (null, "claimed" or "evicting")}]}`.
pub fn write_json<W: Write + ?Sized>(
    dump: &ProcDump,
    filter: &Filter,
    now: u64,
    out: &mut W,
) -> std::io::Result<()> {
    use serde_json::{json, Value};
    let text = |b: &[u8]| Value::String(String::from_utf8_lossy(b).into_owned());
    let items: Vec<Value> = groups(dump, filter)
        .iter()
        .map(|g| {
            let (username, kind) = match &g.owner {
                Owner::User(user) => (text(user), "user"),
                Owner::Fresh => (Value::Null, "fresh"),
                Owner::Unbound => (Value::Null, "unbound"),
            };
            let processes: Vec<Value> = g
                .processes
                .iter()
                .map(|p| {
                    json!({
                        "pid": p.pid.get(),
                        "service": text(&p.service),
                        "uid": known_uid(p),
                        "state": state_text(p.state),
                        "since": p.since,
                        "for_ms": age_ms(now, p),
                        "claim": claim_text(p.claim),
                    })
                })
                .collect();
            json!({"username": username, "group": kind, "processes": processes})
        })
        .collect();
    serde_json::to_writer(&mut *out, &items)?;
    out.write_all(b"\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::anvil::Pid;

    const NOW: u64 = 1_795_892_800_000;

    fn dump() -> ProcDump {
        let reply = b"VERSION\tforeman-anvil\t1\t0\n\
            12\timap\tbob\t1001\tbusy\t1795892790000\t-\n\
            10\timap\talice\t1000\tidle\t1795892735000\t-\n\
            13\timap\t\t0\tfresh\t1795892799000\t-\n\
            bad row\n\
            11\timap\talice\t0\tidle\t1795889200000\tclaimed\n\
            14\tpop3\t\t0\tbusy\t1795892700000\t-\n\
            15\timap\tcarol\t1002\tidle\t1795892000000\tevicting\n\
            \n";
        parse_proc_dump(reply).unwrap()
    }

    #[test]
    fn parse_and_errors() {
        let d = dump();
        assert_eq!(d.rows.len(), 6);
        assert_eq!(d.invalid, [BString::from("bad row")]);
        assert_eq!(parse_proc_dump(b""), Err(ProcDumpError::Truncated));
        assert_eq!(
            parse_proc_dump(b"VERSION\tforeman-anvil\t1\t0\n1\timap\t\t0\tfresh\t1\t-\n"),
            Err(ProcDumpError::Truncated)
        );
        assert_eq!(parse_proc_dump(b"3\n"), Err(ProcDumpError::NoGreeting));
        assert_eq!(
            parse_proc_dump(b"VERSION\tforeman-anvil\t1\t0\n\n").unwrap(),
            ProcDump::default()
        );
    }

    #[test]
    fn durations() {
        assert_eq!(format_duration(999), "0s");
        assert_eq!(format_duration(59_999), "59s");
        assert_eq!(format_duration(60_000), "1m00s");
        assert_eq!(format_duration(3_599_000), "59m59s");
        assert_eq!(format_duration(3_600_000), "1h00m");
        assert_eq!(format_duration(86_399_000), "23h59m");
        assert_eq!(format_duration(2 * 86_400_000 + 3 * 3_600_000), "2d03h");
    }

    #[test]
    fn table_groups_users_then_spares() {
        let out = {
            let mut v = Vec::new();
            write_table(&dump(), &Filter::default(), NOW, 80, &mut v).unwrap();
            String::from_utf8(v).unwrap()
        };
        assert_eq!(
            out,
            "username                   proto pid  uid state    for claim   \n\
             alice                      imap   10 1000 idle   1m05s -       \n\
             alice                      imap   11    ? idle   1h00m claimed \n\
             bob                        imap   12 1001 busy     10s -       \n\
             carol                      imap   15 1002 idle  13m20s evicting\n\
             (fresh)                    imap   13    0 fresh     1s -       \n\
             (unbound)                  pop3   14    0 busy   1m40s -       \n"
        );
    }

    #[test]
    fn a_user_mask_hides_the_unbound_rows() {
        let filter = Filter::parse(&["al*"]).unwrap();
        let d = dump();
        let g = groups(&d, &filter);
        assert_eq!(g.len(), 1);
        assert_eq!(g[0].owner, Owner::User("alice".into()));
        assert_eq!(
            g[0].processes.iter().map(|p| p.pid).collect::<Vec<_>>(),
            [Pid::new(10).unwrap(), Pid::new(11).unwrap()]
        );
    }

    #[test]
    fn json_shape() {
        let mut v = Vec::new();
        write_json(&dump(), &Filter::parse(&["alice"]).unwrap(), NOW, &mut v).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&v).unwrap();
        assert_eq!(
            v,
            serde_json::json!([{"username": "alice", "group": "user", "processes": [
                {"pid": 10, "service": "imap", "uid": 1000, "state": "idle",
                 "since": 1795892735000u64, "for_ms": 65000, "claim": null},
                {"pid": 11, "service": "imap", "uid": null, "state": "idle",
                 "since": 1795889200000u64, "for_ms": 3600000, "claim": "claimed"}]}])
        );
        let mut v = Vec::new();
        write_json(&dump(), &Filter::default(), NOW, &mut v).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&v).unwrap();
        let kinds: Vec<_> = v
            .as_array()
            .unwrap()
            .iter()
            .map(|g| (g["username"].clone(), g["group"].clone()))
            .collect();
        assert_eq!(
            kinds,
            [
                (serde_json::json!("alice"), serde_json::json!("user")),
                (serde_json::json!("bob"), serde_json::json!("user")),
                (serde_json::json!("carol"), serde_json::json!("user")),
                (serde_json::Value::Null, serde_json::json!("fresh")),
                (serde_json::Value::Null, serde_json::json!("unbound")),
            ]
        );
    }
}
