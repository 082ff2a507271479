//! The typed settings the master needs (master-interface.md §3, §4, §15), built from the merged
//! view (stock defaults, built-in services included, overlaid with the file's global settings).

use std::collections::BTreeMap;

use super::apply::ListInfo;
use super::listener::ListenerPath;
use super::table::unescape_name;
use super::value::{parse_octal, parse_size, parse_time};

/// `service { type }`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServiceType {
    Normal,
    Log,
    Config,
    Anvil,
    Login,
    Startup,
    Worker,
    /// Rejected by the settings check.
    Unknown(String),
}

impl ServiceType {
    pub fn parse(s: &str) -> ServiceType {
        match s {
            "" => ServiceType::Normal,
            "log" => ServiceType::Log,
            "config" => ServiceType::Config,
            "anvil" => ServiceType::Anvil,
            "login" => ServiceType::Login,
            "startup" => ServiceType::Startup,
            "worker" => ServiceType::Worker,
            other => ServiceType::Unknown(other.to_owned()),
        }
    }
}

/// A `unix_listener` or `fifo_listener`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnixListener {
    pub path: ListenerPath,
    /// 0 disables the listener.
    pub mode: u32,
    pub user: String,
    pub group: String,
}

/// An `inet_listener`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InetListener {
    /// The section name (what the child sees).
    pub name: String,
    /// Empty = the global `listen`.
    pub address: String,
    /// 0 disables the listener.
    pub port: u16,
    pub ssl: bool,
    pub reuse_port: bool,
    pub haproxy: bool,
}

/// "Unset" for `vsz_limit` (use `default_vsz_limit`).
pub const VSZ_UNSET: u64 = u64::MAX;
/// `idle_kill` value meaning "never".
pub const IDLE_KILL_NEVER: u64 = u32::MAX as u64;

/// One `service` with every 2.3 service setting plus Foreman's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Service {
    pub name: String,
    pub executable: String,
    pub protocol: String,
    pub service_type: ServiceType,
    pub user: String,
    pub group: String,
    pub privileged_group: String,
    pub extra_groups: String,
    pub chroot: String,
    pub drop_priv_before_exec: bool,
    pub process_min_avail: u32,
    /// 0 = `default_process_limit`.
    pub process_limit: u32,
    /// 0 = `default_client_limit`.
    pub client_limit: u32,
    pub service_count: u32,
    /// Seconds; 0 = `default_idle_kill`, [`IDLE_KILL_NEVER`] = never.
    pub idle_kill: u64,
    /// Bytes; [`VSZ_UNSET`] = `default_vsz_limit`, 0 = unlimited.
    pub vsz_limit: u64,
    /// Foreman: start evicting idle processes at `process_limit - process_limit_margin`.
    pub process_limit_margin: u32,
    pub unix_listeners: Vec<UnixListener>,
    pub fifo_listeners: Vec<UnixListener>,
    pub inet_listeners: Vec<InetListener>,
}

/// Global settings the master uses, and all services.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MasterSettings {
    pub base_dir: String,
    pub state_dir: String,
    pub libexec_dir: String,
    pub instance_name: String,
    /// Words of `protocols` (`none` = empty).
    pub protocols: Vec<String>,
    /// Addresses of `listen`, split on spaces and commas.
    pub listen: Vec<String>,
    pub ssl: String,
    pub default_internal_user: String,
    pub default_internal_group: String,
    pub default_login_user: String,
    pub default_process_limit: u32,
    pub default_client_limit: u32,
    /// Seconds.
    pub default_idle_kill: u64,
    pub default_vsz_limit: u64,
    pub version_ignore: bool,
    pub first_valid_uid: u32,
    pub last_valid_uid: u32,
    pub first_valid_gid: u32,
    pub last_valid_gid: u32,
    pub log_path: String,
    pub info_log_path: String,
    pub debug_log_path: String,
    pub log_timestamp: String,
    pub log_debug: String,
    pub syslog_facility: String,
    pub import_environment: String,
    pub stats_writer_socket_path: String,
    pub shutdown_clients: bool,
    pub verbose_proctitle: bool,
    /// Sorted by name.
    pub services: Vec<Service>,
}

impl Service {
    /// `process_limit` with 0 resolved.
    pub fn effective_process_limit(&self, m: &MasterSettings) -> u32 {
        if self.process_limit == 0 {
            m.default_process_limit
        } else {
            self.process_limit
        }
    }

    /// `client_limit` with 0 resolved, clamped to a non-zero `service_count`.
    pub fn effective_client_limit(&self, m: &MasterSettings) -> u32 {
        let limit = if self.client_limit == 0 {
            m.default_client_limit
        } else {
            self.client_limit
        };
        if self.service_count != 0 && self.service_count < limit {
            self.service_count
        } else {
            limit
        }
    }

    /// Idle kill in seconds (`None` = never).
    pub fn effective_idle_kill(&self, m: &MasterSettings) -> Option<u64> {
        match self.idle_kill {
            0 => Some(m.default_idle_kill),
            IDLE_KILL_NEVER => None,
            s => Some(s),
        }
    }

    /// vsz limit in bytes (`None` = unlimited).
    pub fn effective_vsz_limit(&self, m: &MasterSettings) -> Option<u64> {
        match if self.vsz_limit == VSZ_UNSET {
            m.default_vsz_limit
        } else {
            self.vsz_limit
        } {
            0 => None,
            n => Some(n),
        }
    }

    /// The service runs: it has an executable and its protocol (if any) is enabled.
    pub fn in_use(&self, m: &MasterSettings) -> bool {
        !self.executable.is_empty()
            && (self.protocol.is_empty() || m.protocols.contains(&self.protocol))
    }

    /// Its protocol (if any) is listed in `protocols` (doveconf checks only these services).
    pub fn protocol_enabled(&self, m: &MasterSettings) -> bool {
        self.protocol.is_empty() || m.protocols.contains(&self.protocol)
    }

    /// The process count at which the master starts evicting idle processes.
    pub fn eviction_threshold(&self, m: &MasterSettings) -> u32 {
        self.effective_process_limit(m)
            .saturating_sub(self.process_limit_margin)
    }
}

/// Reads typed values out of the merged flat view.
pub struct View<'a> {
    pub values: &'a BTreeMap<String, String>,
    pub lists: &'a BTreeMap<String, ListInfo>,
}

impl View<'_> {
    fn s(&self, key: &str) -> String {
        self.values.get(key).cloned().unwrap_or_default()
    }
    fn u(&self, key: &str) -> u32 {
        self.values
            .get(key)
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    }
    fn b(&self, key: &str) -> bool {
        self.values.get(key).is_some_and(|v| v == "yes")
    }
    fn secs(&self, key: &str) -> u64 {
        self.values
            .get(key)
            .and_then(|v| parse_time(v, false).ok())
            .map_or(0, |ms| ms / 1000)
    }
    fn size(&self, key: &str) -> u64 {
        self.values
            .get(key)
            .and_then(|v| parse_size(v).ok())
            .unwrap_or(0)
    }
    fn ids(&self, list: &str) -> Vec<String> {
        self.lists
            .get(list)
            .map(|l| l.ids.clone())
            .unwrap_or_default()
    }

    fn unix_listeners(&self, service: &str, kind: &str) -> Vec<UnixListener> {
        let list = format!("service/{service}/{kind}");
        self.ids(&list)
            .into_iter()
            .map(|id| {
                let p = format!("{list}/{id}/");
                UnixListener {
                    path: ListenerPath::new(&unescape_name(&id)),
                    mode: self
                        .values
                        .get(&format!("{p}mode"))
                        .and_then(|m| parse_octal(m).ok())
                        .unwrap_or(0o600),
                    user: self.s(&format!("{p}user")),
                    group: self.s(&format!("{p}group")),
                }
            })
            .collect()
    }

    fn service(&self, id: &str) -> Service {
        let p = format!("service/{id}/");
        let inet = format!("{p}inet_listener");
        Service {
            name: unescape_name(id),
            executable: self.s(&format!("{p}executable")),
            protocol: self.s(&format!("{p}protocol")),
            service_type: ServiceType::parse(&self.s(&format!("{p}type"))),
            user: self.s(&format!("{p}user")),
            group: self.s(&format!("{p}group")),
            privileged_group: self.s(&format!("{p}privileged_group")),
            extra_groups: self.s(&format!("{p}extra_groups")),
            chroot: self.s(&format!("{p}chroot")),
            drop_priv_before_exec: self.b(&format!("{p}drop_priv_before_exec")),
            process_min_avail: self.u(&format!("{p}process_min_avail")),
            process_limit: self.u(&format!("{p}process_limit")),
            client_limit: self.u(&format!("{p}client_limit")),
            service_count: self.u(&format!("{p}service_count")),
            idle_kill: self.secs(&format!("{p}idle_kill")),
            vsz_limit: self
                .values
                .get(&format!("{p}vsz_limit"))
                .and_then(|v| parse_size(v).ok())
                .unwrap_or(VSZ_UNSET),
            process_limit_margin: self.u(&format!("{p}process_limit_margin")),
            unix_listeners: self.unix_listeners(id, "unix_listener"),
            fifo_listeners: self.unix_listeners(id, "fifo_listener"),
            inet_listeners: self
                .ids(&inet)
                .into_iter()
                .map(|lid| {
                    let lp = format!("{inet}/{lid}/");
                    InetListener {
                        name: unescape_name(&lid),
                        address: self.s(&format!("{lp}address")),
                        port: self
                            .values
                            .get(&format!("{lp}port"))
                            .and_then(|v| v.parse().ok())
                            .unwrap_or(0),
                        ssl: self.b(&format!("{lp}ssl")),
                        reuse_port: self.b(&format!("{lp}reuse_port")),
                        haproxy: self.b(&format!("{lp}haproxy")),
                    }
                })
                .collect(),
        }
    }

    /// Builds the typed model.
    pub fn master_settings(&self) -> MasterSettings {
        let words = |v: String| -> Vec<String> {
            v.split([' ', ',', '\t'])
                .filter(|w| !w.is_empty())
                .map(str::to_owned)
                .collect()
        };
        let mut protocols = words(self.s("protocols"));
        if protocols == ["none"] {
            protocols.clear();
        }
        let mut services: Vec<Service> = self
            .ids("service")
            .iter()
            .map(|id| self.service(id))
            .collect();
        services.sort_by(|a, b| a.name.cmp(&b.name));
        MasterSettings {
            base_dir: self.s("base_dir"),
            state_dir: self.s("state_dir"),
            libexec_dir: self.s("libexec_dir"),
            instance_name: self.s("instance_name"),
            protocols,
            listen: words(self.s("listen")),
            ssl: self.s("ssl"),
            default_internal_user: self.s("default_internal_user"),
            default_internal_group: self.s("default_internal_group"),
            default_login_user: self.s("default_login_user"),
            default_process_limit: self.u("default_process_limit"),
            default_client_limit: self.u("default_client_limit"),
            default_idle_kill: self.secs("default_idle_kill"),
            default_vsz_limit: self.size("default_vsz_limit"),
            version_ignore: self.b("version_ignore"),
            first_valid_uid: self.u("first_valid_uid"),
            last_valid_uid: self.u("last_valid_uid"),
            first_valid_gid: self.u("first_valid_gid"),
            last_valid_gid: self.u("last_valid_gid"),
            log_path: self.s("log_path"),
            info_log_path: self.s("info_log_path"),
            debug_log_path: self.s("debug_log_path"),
            log_timestamp: self.s("log_timestamp"),
            log_debug: self.s("log_debug"),
            syslog_facility: self.s("syslog_facility"),
            import_environment: self.s("import_environment"),
            stats_writer_socket_path: self.s("stats_writer_socket_path"),
            shutdown_clients: self.b("shutdown_clients"),
            verbose_proctitle: self.b("verbose_proctitle"),
            services,
        }
    }
}

impl MasterSettings {
    /// The service called `name`.
    pub fn service(&self, name: &str) -> Option<&Service> {
        self.services.iter().find(|s| s.name == name)
    }
}
