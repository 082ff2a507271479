//! The master's runtime view of each service (master-interface.md §3.2, §4, §5.2–§5.3): the
//! config model resolved against the system (users, groups, paths), plus the static part of
//! every child's argv and environment. Pure except for the [`Resolver`] passed in, so tests
//! resolve users from a table.

use crate::master_compat::config::{
    ListenerPath, MasterSettings, Service, ServiceType, UnixListener,
};
use crate::wire::escape::escape;

/// Stock's version string; a child with another `DOVECOT_VERSION` refuses to start.
pub const DOVECOT_VERSION: &str = "2.3.19.1";

/// Looks users and groups up (the system's passwd/group in production).
pub trait Resolver {
    /// `(uid, primary gid)` of a user name.
    fn user(&self, name: &str) -> Option<(u32, u32)>;
    /// gid of a group name.
    fn group(&self, name: &str) -> Option<u32>;
}

/// The system's users and groups.
pub struct SystemResolver;

impl Resolver for SystemResolver {
    fn user(&self, name: &str) -> Option<(u32, u32)> {
        nix::unistd::User::from_name(name)
            .ok()
            .flatten()
            .map(|u| (u.uid.as_raw(), u.gid.as_raw()))
    }
    fn group(&self, name: &str) -> Option<u32> {
        nix::unistd::Group::from_name(name)
            .ok()
            .flatten()
            .map(|g| g.gid.as_raw())
    }
}

/// A resolved unix or fifo listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnixSpec {
    /// Absolute path (per-process: with `%{pid}` still in it).
    pub path: ListenerPath,
    pub fifo: bool,
    pub mode: u32,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    /// The name the child sees in `SOCKETn_SETTINGS`.
    pub child_name: String,
}

/// A resolved inet listener (one per address).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InetSpec {
    pub name: String,
    pub address: String,
    pub port: u16,
    pub ssl: bool,
    pub haproxy: bool,
    /// `reuse_port = yes`: SO_REUSEPORT, and each process gets its own socket.
    pub reuse_port: bool,
}

/// One service as the master runs it.
#[derive(Debug, Clone)]
pub struct ServiceDef {
    pub name: String,
    pub kind: ServiceType,
    /// Absolute binary path.
    pub binary: String,
    /// argv, `argv[0]` included.
    pub argv: Vec<String>,
    pub process_limit: u32,
    pub client_limit: u32,
    pub process_min_avail: u32,
    pub service_count: u32,
    /// Seconds, `None` = never.
    pub idle_kill: Option<u64>,
    pub vsz_limit: Option<u64>,
    pub process_limit_margin: u32,
    /// Shared unix and fifo listeners, in fd order (unix first, then fifo).
    pub unix: Vec<UnixSpec>,
    /// Per-process unix listeners (created in each child after the shared ones).
    pub per_pid: Vec<UnixSpec>,
    pub inet: Vec<InetSpec>,
    /// Backlog for every listener: max(4, process_limit × client_limit), capped.
    pub backlog: i32,
    /// `RESTRICT_*` and friends, in stock's order, already formatted.
    pub restrict_env: Vec<(String, String)>,
    /// fd number of this service's log pipe inside the log process (`None` for log itself).
    pub log_fd: Option<i32>,
    /// Relative chroot given (for STATS_WRITER_SOCKET_PATH).
    pub chrooted: bool,
    /// `drop_priv_before_exec = yes`: the master sets the `RESTRICT_*` credentials in the
    /// child before exec (the child gets the variables too, as stock).
    pub drop_priv_before_exec: bool,
}

impl ServiceDef {
    /// Gets fd 3 = the children→anvil pipe.
    pub fn gets_anvil_pipe(&self) -> bool {
        matches!(
            self.kind,
            ServiceType::Normal | ServiceType::Login | ServiceType::Startup | ServiceType::Worker
        )
    }
}

/// The whole resolved configuration.
#[derive(Debug, Clone)]
pub struct ServiceSet {
    pub services: Vec<ServiceDef>,
    /// Index of the log service.
    pub log: usize,
    /// Index of the anvil service, if any.
    pub anvil: Option<usize>,
    /// Index of the config service.
    pub config: usize,
    /// `$BASE/<first unix listener of config>`: what every other child gets as CONFIG_FILE.
    pub config_socket: String,
    /// Environment shared by every child (before the per-service part).
    pub preserve_env: Vec<(String, String)>,
    pub base_dir: String,
}

/// Why the configuration cannot run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ServiceError {
    #[error("log service not specified")]
    NoLog,
    #[error("config process not specified")]
    NoConfig,
    #[error("service({0}) User doesn't exist: {1} (See service {0} {{ user }} setting)")]
    NoUser(String, String),
    #[error("service({0}) Group doesn't exist: {1} (See service {0} {{ group }} setting)")]
    NoGroup(String, String),
    #[error("service({0}) unix_listener: path must not be empty")]
    EmptyPath(String),
}

fn subst(s: &str, m: &MasterSettings) -> String {
    s.replace("$default_internal_user", &m.default_internal_user)
        .replace("$default_login_user", &m.default_login_user)
        .replace("$default_internal_group", &m.default_internal_group)
}

fn absolute(base: &str, p: &str) -> String {
    if p.starts_with('/') {
        p.to_owned()
    } else {
        format!("{base}/{p}")
    }
}

fn abs_listener(base: &str, p: &ListenerPath) -> ListenerPath {
    match p {
        ListenerPath::Shared(s) => ListenerPath::Shared(absolute(base, s)),
        ListenerPath::PerProcess { prefix, suffix } => ListenerPath::PerProcess {
            prefix: absolute(base, prefix),
            suffix: suffix.clone(),
        },
    }
}

/// `argv[0]` as stock builds it: `<instance>/<basename>`, `dovecot-` prefixed unless the
/// instance name starts with `dovecot`.
pub fn argv0(instance: &str, binary: &str) -> String {
    let base = binary.rsplit('/').next().unwrap_or(binary);
    if instance.starts_with("dovecot") {
        format!("{instance}/{base}")
    } else {
        format!("dovecot-{instance}/{base}")
    }
}

fn resolve_listener(
    svc: &str,
    l: &UnixListener,
    fifo: bool,
    m: &MasterSettings,
    r: &dyn Resolver,
) -> Result<UnixSpec, ServiceError> {
    let user = subst(&l.user, m);
    let group = subst(&l.group, m);
    let uid = if user.is_empty() {
        None
    } else {
        Some(
            r.user(&user)
                .ok_or_else(|| ServiceError::NoUser(svc.to_owned(), user.clone()))?
                .0,
        )
    };
    let gid = if group.is_empty() {
        None
    } else {
        Some(
            r.group(&group)
                .ok_or_else(|| ServiceError::NoGroup(svc.to_owned(), group.clone()))?,
        )
    };
    Ok(UnixSpec {
        path: abs_listener(&m.base_dir, &l.path),
        fifo,
        mode: l.mode,
        uid,
        gid,
        child_name: l.path.child_name(),
    })
}

fn resolve_service(
    s: &Service,
    m: &MasterSettings,
    r: &dyn Resolver,
) -> Result<ServiceDef, ServiceError> {
    let mut words = s.executable.split(' ').filter(|w| !w.is_empty());
    let bin = words.next().unwrap_or_default();
    let binary = absolute(&m.libexec_dir, bin);
    let mut argv = vec![argv0(&m.instance_name, &binary)];
    argv.extend(words.map(str::to_owned));

    let mut restrict = Vec::new();
    let user = subst(&s.user, m);
    let group = subst(&s.group, m);
    let chroot = match s.chroot.trim_end_matches('/') {
        "" => None,
        "." => Some(m.base_dir.clone()),
        c => Some(absolute(&m.base_dir, c)),
    };
    if let Some(c) = &chroot {
        restrict.push(("RESTRICT_CHROOT".to_owned(), c.clone()));
    }
    let mut gid = None;
    if !user.is_empty() {
        let (uid, primary) = r
            .user(&user)
            .ok_or_else(|| ServiceError::NoUser(s.name.clone(), user.clone()))?;
        restrict.push(("RESTRICT_SETUID".to_owned(), uid.to_string()));
        gid = Some(primary);
    }
    if !group.is_empty() {
        gid = Some(
            r.group(&group)
                .ok_or_else(|| ServiceError::NoGroup(s.name.clone(), group.clone()))?,
        );
    }
    if let Some(g) = gid {
        restrict.push(("RESTRICT_SETGID".to_owned(), g.to_string()));
    }
    let privileged = subst(&s.privileged_group, m);
    if !privileged.is_empty() {
        let g = r
            .group(&privileged)
            .ok_or_else(|| ServiceError::NoGroup(s.name.clone(), privileged.clone()))?;
        restrict.push(("RESTRICT_SETGID_PRIV".to_owned(), g.to_string()));
    }
    let extra = subst(&s.extra_groups, m);
    let extra: Vec<String> = extra
        .split([',', ' '])
        .filter(|g| !g.is_empty())
        .map(|g| {
            r.group(g)
                .map(|gid| gid.to_string())
                .ok_or_else(|| ServiceError::NoGroup(s.name.clone(), g.to_owned()))
        })
        .collect::<Result<_, _>>()?;
    if !extra.is_empty() {
        restrict.push(("RESTRICT_SETEXTRAGROUPS".to_owned(), extra.join(",")));
    }

    let mut unix = Vec::new();
    let mut per_pid = Vec::new();
    for (list, fifo) in [(&s.unix_listeners, false), (&s.fifo_listeners, true)] {
        for l in list.iter().filter(|l| l.mode != 0) {
            if l.path.to_string().is_empty() {
                return Err(ServiceError::EmptyPath(s.name.clone()));
            }
            let spec = resolve_listener(&s.name, l, fifo, m, r)?;
            if spec.path.is_per_process() {
                per_pid.push(spec);
            } else {
                unix.push(spec);
            }
        }
    }
    let ssl_enabled = m.ssl != "no";
    let mut inet = Vec::new();
    for l in s
        .inet_listeners
        .iter()
        .filter(|l| l.port != 0 && (!l.ssl || ssl_enabled))
    {
        let addrs: Vec<String> = if l.address.is_empty() {
            m.listen.clone()
        } else {
            l.address
                .split([' ', ','])
                .filter(|a| !a.is_empty())
                .map(str::to_owned)
                .collect()
        };
        for a in addrs {
            inet.push(InetSpec {
                name: l.name.clone(),
                address: a,
                port: l.port,
                ssl: l.ssl,
                haproxy: l.haproxy,
                reuse_port: l.reuse_port,
            });
        }
    }
    let process_limit = s.effective_process_limit(m);
    let client_limit = s.effective_client_limit(m);
    let backlog = (process_limit as u64 * client_limit as u64).clamp(4, i32::MAX as u64) as i32;
    Ok(ServiceDef {
        name: s.name.clone(),
        kind: s.service_type.clone(),
        binary,
        argv,
        process_limit,
        client_limit,
        process_min_avail: s.process_min_avail,
        service_count: s.service_count,
        idle_kill: s.effective_idle_kill(m),
        vsz_limit: s.effective_vsz_limit(m),
        process_limit_margin: s.process_limit_margin,
        unix,
        per_pid,
        inet,
        backlog,
        restrict_env: restrict,
        log_fd: None,
        chrooted: chroot.is_some(),
        drop_priv_before_exec: s.drop_priv_before_exec,
    })
}

impl ServiceDef {
    /// The credentials a `drop_priv_before_exec` child takes before exec, from its
    /// `RESTRICT_*` values, as stock's restrict_access: supplementary groups = the gid and the
    /// extra groups, the privileged group as the saved gid.
    pub fn drop_priv(&self) -> Option<crate::sys::process::DropPriv> {
        if !self.drop_priv_before_exec {
            return None;
        }
        let get = |k: &str| {
            self.restrict_env
                .iter()
                .find(|(n, _)| n == k)
                .map(|(_, v)| v.as_str())
        };
        let num = |k: &str| get(k).and_then(|v| v.parse::<u32>().ok());
        let gid = num("RESTRICT_SETGID");
        let mut groups: Vec<u32> = gid.into_iter().collect();
        groups.extend(
            get("RESTRICT_SETEXTRAGROUPS")
                .unwrap_or("")
                .split(',')
                .filter_map(|g| g.trim().parse::<u32>().ok()),
        );
        groups.sort_unstable();
        groups.dedup();
        Some(crate::sys::process::DropPriv {
            uid: num("RESTRICT_SETUID"),
            gid,
            saved_gid: num("RESTRICT_SETGID_PRIV"),
            groups,
        })
    }
}

/// Resolves every service that runs (has an executable, protocol enabled).
pub fn resolve(
    m: &MasterSettings,
    r: &dyn Resolver,
    env: &[(String, String)],
) -> Result<ServiceSet, ServiceError> {
    let mut services = Vec::new();
    for s in m.services.iter().filter(|s| s.in_use(m)) {
        services.push(resolve_service(s, m, r)?);
    }
    let log = services
        .iter()
        .position(|s| s.kind == ServiceType::Log)
        .ok_or(ServiceError::NoLog)?;
    let config = services
        .iter()
        .position(|s| s.kind == ServiceType::Config)
        .ok_or(ServiceError::NoConfig)?;
    let anvil = services.iter().position(|s| s.kind == ServiceType::Anvil);
    // The log process sees the others' pipes from fd 8 on, in service order.
    let mut next = crate::master_compat::child_env::MASTER_LISTEN_FD_FIRST + 1;
    for (i, s) in services.iter_mut().enumerate() {
        if i != log {
            s.log_fd = Some(next);
            next += 1;
        }
    }
    let config_socket = services[config]
        .unix
        .first()
        .map(|u| u.path.to_string())
        .unwrap_or_else(|| format!("{}/config", m.base_dir));
    // import_environment: names are preserved from the master's environment, NAME=value
    // items are set; the systemd names are always preserved.
    let mut names: Vec<String> = Vec::new();
    let mut preserve_env = Vec::new();
    for item in m.import_environment.split_whitespace() {
        match item.split_once('=') {
            Some((k, v)) => preserve_env.push((k.to_owned(), v.to_owned())),
            None => names.push(item.to_owned()),
        }
    }
    for n in ["LISTEN_PID", "LISTEN_FDS", "NOTIFY_SOCKET"] {
        names.push(n.to_owned());
    }
    for (k, v) in env {
        if names.contains(k) && !preserve_env.iter().any(|(pk, _)| pk == k) {
            preserve_env.push((k.clone(), v.clone()));
        }
    }
    let mut all_names: Vec<String> = preserve_env.iter().map(|(k, _)| k.clone()).collect();
    all_names.extend(names);
    let mut with_list = vec![("DOVECOT_PRESERVE_ENVS".to_owned(), all_names.join(" "))];
    with_list.extend(preserve_env);
    Ok(ServiceSet {
        services,
        log,
        anvil,
        config,
        config_socket,
        preserve_env: with_list,
        base_dir: m.base_dir.clone(),
    })
}

/// What varies per process when building its environment.
#[derive(Debug, Clone, Copy)]
pub struct ProcessEnv<'a> {
    pub generation: u32,
    pub anvil_restarted: bool,
    pub hostname: &'a str,
    /// Path of the stock-acceptable config copy (the config service's CONFIG_FILE).
    pub config_file: &'a str,
    /// `foreman master -p`: the SSL key password, given to services with inet listeners.
    pub ssl_key_password: Option<&'a str>,
}

/// The child's complete environment, in stock's order (master-interface.md §5.2).
pub fn child_env(
    set: &ServiceSet,
    idx: usize,
    m: &MasterSettings,
    p: ProcessEnv<'_>,
) -> Vec<(String, String)> {
    let s = &set.services[idx];
    let mut env = set.preserve_env.clone();
    let mut put = |k: &str, v: String| env.push((k.to_owned(), v));
    put("DOVECOT_CHILD_PROCESS", "1".into());
    match s.kind {
        ServiceType::Config => put("CONFIG_FILE", p.config_file.to_owned()),
        ServiceType::Log => {
            put("DOVECONF_ENV", "1".into());
            put("LOG_PATH", m.log_path.clone());
            put("INFO_LOG_PATH", m.info_log_path.clone());
            put("DEBUG_LOG_PATH", m.debug_log_path.clone());
            put("LOG_TIMESTAMP", m.log_timestamp.clone());
            put("SYSLOG_FACILITY", m.syslog_facility.clone());
            put("INSTANCE_NAME", m.instance_name.clone());
            if m.verbose_proctitle {
                put("VERBOSE_PROCTITLE", "1".into());
            }
            put("SSL", m.ssl.clone());
        }
        _ => put("CONFIG_FILE", set.config_socket.clone()),
    }
    put("SERVICE_NAME", s.name.clone());
    put("CLIENT_LIMIT", s.client_limit.to_string());
    put("PROCESS_LIMIT", s.process_limit.to_string());
    put("PROCESS_MIN_AVAIL", s.process_min_avail.to_string());
    put(
        "IDLE_KILL",
        s.idle_kill.unwrap_or(u32::MAX as u64).to_string(),
    );
    if s.service_count != 0 {
        put("SERVICE_COUNT", s.service_count.to_string());
    }
    put("GENERATION", p.generation.to_string());
    put("DOVECOT_HOSTNAME", p.hostname.to_owned());
    put("DOVECOT_HOSTDOMAIN", p.hostname.to_owned());
    if !m.version_ignore {
        put("DOVECOT_VERSION", DOVECOT_VERSION.into());
    }
    if !m.stats_writer_socket_path.is_empty() {
        let v = if s.chrooted {
            m.stats_writer_socket_path.clone()
        } else {
            absolute(&m.base_dir, &m.stats_writer_socket_path)
        };
        put("STATS_WRITER_SOCKET_PATH", v);
    }
    if let (Some(pw), false) = (p.ssl_key_password, s.inet.is_empty()) {
        put("SSL_KEY_PASSWORD", pw.to_owned());
    }
    if p.anvil_restarted && s.kind == ServiceType::Anvil {
        put("ANVIL_RESTARTED", "1".into());
    }
    put("LOG_DEBUG", m.log_debug.clone());
    // Slot numbers: anvil's two pipes and the log's control + service pipes come first.
    let first = match s.kind {
        ServiceType::Anvil => 2,
        ServiceType::Log => set.services.len(), // control pipe + N-1 service pipes
        _ => 0,
    };
    let mut slot = first;
    for u in s.unix.iter().chain(s.per_pid.iter()) {
        let name = String::from_utf8_lossy(&escape(u.child_name.as_bytes())).into_owned();
        put(&format!("SOCKET{slot}_SETTINGS"), name);
        slot += 1;
    }
    for i in &s.inet {
        let mut v = String::from_utf8_lossy(&escape(i.name.as_bytes())).into_owned();
        if i.ssl {
            v.push_str("\tssl");
        }
        if i.haproxy {
            v.push_str("\thaproxy");
        }
        put(&format!("SOCKET{slot}_SETTINGS"), v);
        slot += 1;
    }
    if s.kind != ServiceType::Log {
        put("LOG_SERVICE", "1".into());
    }
    put("SOCKET_COUNT", slot.to_string());
    for (k, v) in &s.restrict_env {
        put(k, v.clone());
    }
    env
}

/// A small valid configuration (imap on 127.0.0.1:14300) plus `extra`, loaded with Foreman's
/// extensions: the fixture of this module's and the supervisor's unit tests.
#[cfg(test)]
pub(crate) fn test_settings(extra: &str) -> MasterSettings {
    use crate::master_compat::config::{load_str, LoadOptions};
    let text = format!(
        "base_dir = /b\nprotocols = imap\nlisten = 127.0.0.1\nssl = no\n\
         service imap-login {{\n inet_listener imap {{\n port = 14300\n }}\n}}\n{extra}"
    );
    let loaded = load_str(
        "t.conf",
        &text,
        LoadOptions {
            foreman: true,
            ..Default::default()
        },
    );
    assert!(loaded.errors.is_empty(), "{:?}", loaded.errors);
    loaded.master_settings()
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Table;
    impl Resolver for Table {
        fn user(&self, name: &str) -> Option<(u32, u32)> {
            match name {
                "dovecot" => Some((101, 102)),
                "dovenull" => Some((103, 104)),
                _ => None,
            }
        }
        fn group(&self, name: &str) -> Option<u32> {
            match name {
                "dovecot" => Some(102),
                "dovenull" => Some(104),
                _ => None,
            }
        }
    }

    fn settings(extra: &str) -> MasterSettings {
        test_settings(&format!("instance_name = mref\n{extra}"))
    }

    fn env_of(set: &ServiceSet, m: &MasterSettings, name: &str) -> Vec<(String, String)> {
        let idx = set.services.iter().position(|s| s.name == name).unwrap();
        child_env(
            set,
            idx,
            m,
            ProcessEnv {
                generation: 7,
                anvil_restarted: false,
                hostname: "h",
                config_file: "/c.conf",
                ssl_key_password: Some("pw"),
            },
        )
    }

    fn get<'a>(env: &'a [(String, String)], k: &str) -> Option<&'a str> {
        env.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str())
    }

    #[test]
    fn imap_login_env_matches_observed() {
        let m = settings("");
        let set = resolve(&m, &Table, &[]).unwrap();
        let env = env_of(&set, &m, "imap-login");
        assert_eq!(get(&env, "CONFIG_FILE"), Some("/b/config"));
        assert_eq!(get(&env, "CLIENT_LIMIT"), Some("1"));
        assert_eq!(get(&env, "SERVICE_COUNT"), Some("1"));
        assert_eq!(get(&env, "IDLE_KILL"), Some("60"));
        assert_eq!(get(&env, "SOCKET0_SETTINGS"), Some("imap"));
        assert_eq!(get(&env, "SOCKET_COUNT"), Some("1"));
        assert_eq!(get(&env, "RESTRICT_CHROOT"), Some("/b/login"));
        assert_eq!(get(&env, "RESTRICT_SETUID"), Some("103"));
        assert_eq!(get(&env, "RESTRICT_SETGID"), Some("104"));
        assert_eq!(get(&env, "STATS_WRITER_SOCKET_PATH"), Some("stats-writer"));
        assert_eq!(get(&env, "GENERATION"), Some("7"));
        let def = set
            .services
            .iter()
            .find(|s| s.name == "imap-login")
            .unwrap();
        assert_eq!(def.drop_priv(), None, "drop_priv_before_exec = no");
        let m2 = settings("service imap {\n drop_priv_before_exec = yes\n user = dovecot\n}\n");
        let set2 = resolve(&m2, &Table, &[]).unwrap();
        let imap = set2.services.iter().find(|s| s.name == "imap").unwrap();
        assert_eq!(
            imap.drop_priv(),
            Some(crate::sys::process::DropPriv {
                uid: Some(101),
                gid: Some(102),
                saved_gid: imap
                    .restrict_env
                    .iter()
                    .find(|(k, _)| k == "RESTRICT_SETGID_PRIV")
                    .map(|(_, v)| v.parse().unwrap()),
                groups: vec![102],
            })
        );
        // `-p`: only services with inet listeners get the SSL key password.
        assert_eq!(get(&env, "SSL_KEY_PASSWORD"), Some("pw"));
        assert_eq!(get(&env_of(&set, &m, "auth"), "SSL_KEY_PASSWORD"), None);
        let def = set
            .services
            .iter()
            .find(|s| s.name == "imap-login")
            .unwrap();
        assert_eq!(def.argv, vec!["dovecot-mref/imap-login".to_owned()]);
        assert_eq!(def.binary, "/usr/lib/dovecot/imap-login");
    }

    #[test]
    fn anvil_and_log_slots() {
        let m = settings("");
        let set = resolve(&m, &Table, &[]).unwrap();
        let anvil = env_of(&set, &m, "anvil");
        // Slots 0 and 1 are the two pipes; the listeners follow (order by name is enough:
        // services find their listeners by name).
        let mut names = [
            get(&anvil, "SOCKET2_SETTINGS"),
            get(&anvil, "SOCKET3_SETTINGS"),
        ];
        names.sort();
        assert_eq!(names, [Some("anvil"), Some("anvil-auth-penalty")]);
        assert_eq!(get(&anvil, "SOCKET0_SETTINGS"), None);
        assert_eq!(get(&anvil, "SOCKET_COUNT"), Some("4"));
        assert_eq!(get(&anvil, "RESTRICT_CHROOT"), Some("/b/empty"));
        let log = env_of(&set, &m, "log");
        let n = set.services.len();
        assert_eq!(
            get(&log, &format!("SOCKET{n}_SETTINGS")),
            Some("log-errors")
        );
        assert_eq!(
            get(&log, "SOCKET_COUNT"),
            Some((n + 1).to_string().as_str())
        );
        assert_eq!(get(&log, "LOG_SERVICE"), None);
        assert_eq!(get(&log, "DOVECONF_ENV"), Some("1"));
        // Log fds are consecutive from 8 over the non-log services.
        let fds: Vec<i32> = set.services.iter().filter_map(|s| s.log_fd).collect();
        assert_eq!(fds, (8..8 + n as i32 - 1).collect::<Vec<_>>());
    }

    #[test]
    fn imap_extra_groups_and_per_pid_listener() {
        let m =
            settings("service imap {\n unix_listener imap-master-%{pid} {\n mode = 0600\n }\n}\n");
        let set = resolve(&m, &Table, &[]).unwrap();
        let env = env_of(&set, &m, "imap");
        assert_eq!(get(&env, "RESTRICT_SETEXTRAGROUPS"), Some("102"));
        assert_eq!(get(&env, "RESTRICT_SETUID"), None);
        let def = set.services.iter().find(|s| s.name == "imap").unwrap();
        assert_eq!(def.per_pid.len(), 1);
        assert_eq!(def.per_pid[0].child_name, "imap-master");
        assert_eq!(def.per_pid[0].path.for_pid(9), "/b/imap-master-9");
        assert_eq!(get(&env, "SOCKET_COUNT"), Some("3"));
        assert_eq!(get(&env, "SOCKET2_SETTINGS"), Some("imap-master"));
    }

    #[test]
    fn preserved_environment() {
        let m = settings("import_environment = TZ FOO=bar\n");
        let set = resolve(
            &m,
            &Table,
            &[("TZ".into(), "UTC".into()), ("PATH".into(), "/x".into())],
        )
        .unwrap();
        let env = env_of(&set, &m, "config");
        assert_eq!(get(&env, "FOO"), Some("bar"));
        assert_eq!(get(&env, "TZ"), Some("UTC"));
        assert_eq!(get(&env, "PATH"), None);
        assert_eq!(get(&env, "CONFIG_FILE"), Some("/c.conf"));
        assert!(get(&env, "DOVECOT_PRESERVE_ENVS").unwrap().contains("TZ"));
    }
}
