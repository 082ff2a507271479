//! What a Dovecot 2.3 master gives a service process: fixed fds and environment variables
//! (master-interface.md §5.1–§5.2, anvil-protocol.md §1.2).
//!
//! [`ChildEnv::parse`] reads the variables once from any `(key, value)` iterator, so tests
//! pass a literal list and the binary passes `std::env::vars_os()`. Only the variables a
//! service acts on are kept; the rest (`DOVECOT_HOSTNAME`, `CONFIG_FILE`, …) are ignored.

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

use bstr::BString;

use crate::wire::escape::unescape;

/// fd 3: shared children -> anvil pipe (write end), for non-anvil services.
pub const MASTER_ANVIL_FD: i32 = 3;
/// fd 4 of anvil: socketpair end over which the master passes a new log fd.
pub const MASTER_ANVIL_LOG_FDPASS_FD: i32 = 4;
/// fd 5: status pipe write end.
pub const MASTER_STATUS_FD: i32 = 5;
/// fd 6: master-dead pipe write end (error/hang-up = master gone).
pub const MASTER_DEAD_FD: i32 = 6;
/// fd 7: first listener.
pub const MASTER_LISTEN_FD_FIRST: i32 = 7;

/// Why the environment is not one a master gives its children.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChildEnvError {
    /// `GENERATION` is absent: the process was not started by a master.
    #[error("GENERATION is not set: not started by a Dovecot master")]
    NotUnderMaster,
    /// `CLIENT_LIMIT` absent or 0 (stock: fatal `CLIENT_LIMIT missing`).
    #[error("CLIENT_LIMIT missing")]
    ClientLimitMissing,
    /// A numeric variable does not hold a number.
    #[error("invalid {name} value: {value:?}")]
    Invalid { name: String, value: String },
}

/// The privilege drop a master asks for (`RESTRICT_*`); stock services do it themselves
/// after setup (master-interface.md §5.4).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Restrict {
    /// `RESTRICT_CHROOT`: directory to chroot into.
    pub chroot: Option<PathBuf>,
    /// `RESTRICT_SETUID`.
    pub uid: Option<u32>,
    /// `RESTRICT_SETGID`.
    pub gid: Option<u32>,
    /// `RESTRICT_SETGID_PRIV`: the privileged group (kept as a supplementary group).
    pub gid_priv: Option<u32>,
    /// `RESTRICT_SETEXTRAGROUPS`: comma-separated extra gids.
    pub extra_groups: Vec<u32>,
}

impl Restrict {
    /// True when nothing is to be changed.
    pub fn is_empty(&self) -> bool {
        *self == Restrict::default()
    }
}

/// One named listener slot (`SOCKETn_SETTINGS`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SocketSettings {
    /// Slot index n: the listener is fd `MASTER_LISTEN_FD_FIRST + n`.
    pub index: u32,
    /// The listener name, tab-unescaped (`anvil`, `anvil-auth-penalty`).
    pub name: BString,
    /// Flags after the name (`ssl`, `haproxy`).
    pub flags: Vec<BString>,
}

/// The parsed environment of a service process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChildEnv {
    /// `GENERATION`: the "uid" field of status records.
    pub generation: u32,
    /// `CLIENT_LIMIT`.
    pub client_limit: u32,
    /// `SOCKET_COUNT`: fds from [`MASTER_LISTEN_FD_FIRST`] on (anvil: its two pipes included).
    pub socket_count: u32,
    /// `SOCKETn_SETTINGS`, sorted by slot.
    pub sockets: Vec<SocketSettings>,
    /// `ANVIL_RESTARTED` is set (to anything non-empty).
    pub anvil_restarted: bool,
    /// `LOG_SERVICE=1`: write Dovecot's internal log format to fd 2.
    pub log_service: bool,
    /// `SERVICE_NAME`.
    pub service_name: Option<BString>,
    /// `RESTRICT_*`.
    pub restrict: Restrict,
}

fn invalid(name: &str, value: &OsStr) -> ChildEnvError {
    ChildEnvError::Invalid {
        name: name.to_owned(),
        value: value.to_string_lossy().into_owned(),
    }
}

fn parse_u32(name: &str, value: &OsStr) -> Result<u32, ChildEnvError> {
    let bytes = value.as_bytes();
    if bytes.is_empty() || !bytes.iter().all(u8::is_ascii_digit) {
        return Err(invalid(name, value));
    }
    std::str::from_utf8(bytes)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| invalid(name, value))
}

/// An optional numeric variable: empty means unset, as stock treats it.
fn parse_opt_u32(name: &str, value: Option<&OsString>) -> Result<Option<u32>, ChildEnvError> {
    match value {
        None => Ok(None),
        Some(v) if v.is_empty() => Ok(None),
        Some(v) => parse_u32(name, v).map(Some),
    }
}

impl ChildEnv {
    /// Parses the variables of `vars`; unknown ones are ignored.
    pub fn parse<I, K, V>(vars: I) -> Result<ChildEnv, ChildEnvError>
    where
        I: IntoIterator<Item = (K, V)>,
        K: AsRef<OsStr>,
        V: AsRef<OsStr>,
    {
        let mut generation = None;
        let mut client_limit = None;
        let mut socket_count = None;
        let mut sockets = Vec::new();
        let mut anvil_restarted = false;
        let mut log_service = false;
        let mut service_name = None;
        let (mut chroot, mut setuid, mut setgid, mut setgid_priv, mut extra) =
            (None, None, None, None, None);

        for (key, value) in vars {
            let (key, value) = (key.as_ref(), value.as_ref());
            let owned = || value.to_os_string();
            match key.as_bytes() {
                b"GENERATION" => generation = Some(parse_u32("GENERATION", value)?),
                b"CLIENT_LIMIT" => client_limit = Some(owned()),
                b"SOCKET_COUNT" => socket_count = Some(parse_u32("SOCKET_COUNT", value)?),
                b"ANVIL_RESTARTED" => anvil_restarted = !value.is_empty(),
                b"LOG_SERVICE" => log_service = value.as_bytes() == b"1",
                b"SERVICE_NAME" => service_name = Some(BString::from(value.as_bytes())),
                b"RESTRICT_CHROOT" => chroot = Some(owned()),
                b"RESTRICT_SETUID" => setuid = Some(owned()),
                b"RESTRICT_SETGID" => setgid = Some(owned()),
                b"RESTRICT_SETGID_PRIV" => setgid_priv = Some(owned()),
                b"RESTRICT_SETEXTRAGROUPS" => extra = Some(owned()),
                k => {
                    if let Some(index) = socket_slot(k) {
                        sockets.push(parse_socket_settings(index, value.as_bytes()));
                    }
                }
            }
        }

        let generation = generation.ok_or(ChildEnvError::NotUnderMaster)?;
        let client_limit = match client_limit {
            None => return Err(ChildEnvError::ClientLimitMissing),
            Some(v) => match parse_u32("CLIENT_LIMIT", &v)? {
                0 => return Err(ChildEnvError::ClientLimitMissing),
                n => n,
            },
        };
        sockets.sort_by_key(|s| s.index);
        let extra_groups = match extra {
            None => Vec::new(),
            Some(v) => v
                .as_bytes()
                .split(|&b| b == b',')
                .filter(|g| !g.is_empty())
                .map(|g| parse_u32("RESTRICT_SETEXTRAGROUPS", OsStr::from_bytes(g)))
                .collect::<Result<_, _>>()?,
        };
        Ok(ChildEnv {
            generation,
            client_limit,
            socket_count: socket_count.unwrap_or(1),
            sockets,
            anvil_restarted,
            log_service,
            service_name,
            restrict: Restrict {
                chroot: chroot.filter(|c| !c.is_empty()).map(PathBuf::from),
                uid: parse_opt_u32("RESTRICT_SETUID", setuid.as_ref())?,
                gid: parse_opt_u32("RESTRICT_SETGID", setgid.as_ref())?,
                gid_priv: parse_opt_u32("RESTRICT_SETGID_PRIV", setgid_priv.as_ref())?,
                extra_groups,
            },
        })
    }

    /// Parses this process's environment.
    pub fn from_process() -> Result<ChildEnv, ChildEnvError> {
        ChildEnv::parse(std::env::vars_os())
    }
}

/// `SOCKET<n>_SETTINGS` -> n.
fn socket_slot(key: &[u8]) -> Option<u32> {
    let digits = key.strip_prefix(b"SOCKET")?.strip_suffix(b"_SETTINGS")?;
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(digits).ok()?.parse().ok()
}

/// `<tab-escaped name>[\t<flag>]*`.
fn parse_socket_settings(index: u32, value: &[u8]) -> SocketSettings {
    let mut fields = value
        .split(|&b| b == b'\t')
        .map(|f| BString::from(unescape(f).into_owned()));
    let name = fields.next().unwrap_or_default();
    SocketSettings {
        index,
        name,
        flags: fields.collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stock_anvil_env() -> Vec<(&'static str, &'static str)> {
        vec![
            ("DOVECOT_PRESERVE_ENVS", "NOTIFY_SOCKET LISTEN_FDS"),
            ("DOVECOT_CHILD_PROCESS", "1"),
            ("CONFIG_FILE", "/run/dovecot/config"),
            ("SERVICE_NAME", "anvil"),
            ("CLIENT_LIMIT", "1000"),
            ("PROCESS_LIMIT", "1"),
            ("PROCESS_MIN_AVAIL", "1"),
            ("IDLE_KILL", "4294967295"),
            ("GENERATION", "1"),
            ("DOVECOT_VERSION", "2.3.19.1"),
            ("STATS_WRITER_SOCKET_PATH", "stats-writer"),
            ("LOG_DEBUG", ""),
            ("SOCKET2_SETTINGS", "anvil"),
            ("SOCKET3_SETTINGS", "anvil-auth-penalty"),
            ("LOG_SERVICE", "1"),
            ("SOCKET_COUNT", "4"),
            ("RESTRICT_CHROOT", "/run/dovecot/empty"),
            ("RESTRICT_SETUID", "104"),
            ("RESTRICT_SETGID", "109"),
        ]
    }

    #[test]
    fn stock_anvil_environment() {
        let env = ChildEnv::parse(stock_anvil_env()).unwrap();
        assert_eq!(env.generation, 1);
        assert_eq!(env.client_limit, 1000);
        assert_eq!(env.socket_count, 4);
        assert!(!env.anvil_restarted);
        assert!(env.log_service);
        assert_eq!(env.service_name, Some(BString::from("anvil")));
        let names: Vec<_> = env
            .sockets
            .iter()
            .map(|s| (s.index, s.name.to_string()))
            .collect();
        assert_eq!(
            names,
            vec![(2, "anvil".into()), (3, "anvil-auth-penalty".into())]
        );
        assert_eq!(
            env.restrict,
            Restrict {
                chroot: Some("/run/dovecot/empty".into()),
                uid: Some(104),
                gid: Some(109),
                gid_priv: None,
                extra_groups: vec![]
            }
        );
    }

    #[test]
    fn restarted_anvil() {
        let mut vars = stock_anvil_env();
        vars.push(("ANVIL_RESTARTED", "1"));
        assert!(ChildEnv::parse(vars).unwrap().anvil_restarted);
    }

    #[test]
    fn missing_generation_means_no_master() {
        let vars = stock_anvil_env()
            .into_iter()
            .filter(|(k, _)| *k != "GENERATION");
        assert_eq!(ChildEnv::parse(vars), Err(ChildEnvError::NotUnderMaster));
    }

    #[test]
    fn client_limit_missing_or_zero() {
        let without = stock_anvil_env()
            .into_iter()
            .filter(|(k, _)| *k != "CLIENT_LIMIT");
        assert_eq!(
            ChildEnv::parse(without),
            Err(ChildEnvError::ClientLimitMissing)
        );
        let zero = stock_anvil_env().into_iter().map(|(k, v)| {
            if k == "CLIENT_LIMIT" {
                (k, "0")
            } else {
                (k, v)
            }
        });
        assert_eq!(
            ChildEnv::parse(zero),
            Err(ChildEnvError::ClientLimitMissing)
        );
    }

    #[test]
    fn invalid_numbers_are_typed_errors() {
        for (key, bad) in [
            ("GENERATION", "x"),
            ("SOCKET_COUNT", "-1"),
            ("RESTRICT_SETUID", "1a"),
        ] {
            let vars = stock_anvil_env()
                .into_iter()
                .map(|(k, v)| if k == key { (k, bad) } else { (k, v) });
            match ChildEnv::parse(vars) {
                Err(ChildEnvError::Invalid { name, .. }) => assert_eq!(name, key),
                other => panic!("{key}: {other:?}"),
            }
        }
    }

    #[test]
    fn defaults_and_empty_restrict() {
        let env = ChildEnv::parse([
            ("GENERATION", "7"),
            ("CLIENT_LIMIT", "5"),
            ("RESTRICT_SETUID", ""),
        ])
        .unwrap();
        assert_eq!(env.socket_count, 1);
        assert!(!env.log_service);
        assert!(env.restrict.is_empty());
    }

    #[test]
    fn socket_settings_with_flags_and_escapes() {
        let env = ChildEnv::parse([
            ("GENERATION", "1"),
            ("CLIENT_LIMIT", "1"),
            ("SOCKET1_SETTINGS", "imaps\tssl\thaproxy"),
            ("SOCKET0_SETTINGS", "a\x01tb\x011c"),
            ("SOCKETX_SETTINGS", "ignored"),
            ("RESTRICT_SETEXTRAGROUPS", "5,6"),
        ])
        .unwrap();
        assert_eq!(env.sockets.len(), 2);
        assert_eq!(env.sockets[0].name, "a\tb\x01c");
        assert_eq!(env.sockets[1].name, "imaps");
        assert_eq!(
            env.sockets[1].flags,
            vec![BString::from("ssl"), BString::from("haproxy")]
        );
        assert_eq!(env.restrict.extra_groups, vec![5, 6]);
    }
}
