//! `foreman who`: `doveadm who` output (default grouping and `-1`) plus `--json`, linear in
//! the number of sessions.
