//! The post-login capability string, computed the way stock imap 2.3.19.1 builds it when it
//! creates a client, so the LOGIN reply the dispatcher puts in `client_output` equals stock's.
//!
//! Order (stock): the base string (`imap_capability` empty → the built-in list; `+X` → the
//! built-in list then X; anything else → exactly that and nothing is ever added), then
//! `LITERAL-` or `LITERAL+` (imap_literal_minus), `NOTIFY` (mailbox_list_index), `URLAUTH
//! URLAUTH=BINARY` (imap_urlauth_host and mail_attribute_dict set), `METADATA`
//! (imap_metadata and mail_attribute_dict), `SPECIAL-USE` (any namespace has a mailbox
//! section), then the plugins' capabilities, last-loaded plugin first (each plugin's hook
//! adds its own, then calls the one registered before it; plugins load sorted by their module
//! file names, `lib02_imap_acl_plugin.so` < `lib11_imap_quota_plugin.so` <
//! `lib30_imap_zlib_plugin.so`, so the order of `mail_plugins` does not matter). Known plugins: imap_acl → `ACL
//! RIGHTS=texk`, imap_quota → `QUOTA`, imap_zlib → `COMPRESS=DEFLATE`. Not modelled:
//! `SEARCH=FUZZY` (depends on the fts backend at run time).
//!
//! Settings come from the config service (`CONFIG_FILE` = `$BASE/config`), the same answer
//! imap gets: [`CapSettings::from_config_reply`].

use bstr::ByteSlice;

/// The built-in capability list of stock imap 2.3.19.1 (its `CAPABILITY_STRING`).
pub const BUILTIN: &str = "IMAP4rev1 SASL-IR LOGIN-REFERRALS ID ENABLE IDLE SORT SORT=DISPLAY \
THREAD=REFERENCES THREAD=REFS THREAD=ORDEREDSUBJECT MULTIAPPEND URL-PARTIAL CATENATE UNSELECT \
CHILDREN NAMESPACE UIDPLUS LIST-EXTENDED I18NLEVEL=1 CONDSTORE QRESYNC ESEARCH ESORT SEARCHRES \
WITHIN CONTEXT=SEARCH LIST-STATUS BINARY MOVE SNIPPET=FUZZY PREVIEW=FUZZY PREVIEW STATUS=SIZE \
SAVEDATE";

/// Plugins that add capabilities: (name, module file sort key, capabilities in order).
const PLUGIN_CAPS: &[(&str, &str, &[&str])] = &[
    ("imap_acl", "02_imap_acl", &["ACL", "RIGHTS=texk"]),
    ("imap_quota", "11_imap_quota", &["QUOTA"]),
    ("imap_zlib", "30_imap_zlib", &["COMPRESS=DEFLATE"]),
    ("imap_old_stats", "95_imap_old_stats", &[]),
];

/// Plugins that change the capability string in ways not modelled here: fts backends with
/// fuzzy search make stock add `SEARCH=FUZZY`.
const UNMODELLED: &[&str] = &["fts_lucene", "fts_solr"];

/// The settings the capability string depends on (stock defaults in [`Default`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CapSettings {
    pub imap_capability: String,
    pub imap_literal_minus: bool,
    pub mailbox_list_index: bool,
    pub imap_urlauth_host: String,
    pub imap_metadata: bool,
    pub mail_attribute_dict: String,
    /// Some namespace has a mailbox section.
    pub special_use: bool,
    /// `mail_plugins`, in order.
    pub mail_plugins: Vec<String>,
    /// `mail_uid`: the uid imap runs a user as when the userdb returns none (a number or
    /// a user name; empty = none). Not a capability setting, but read from the same reply.
    pub mail_uid: String,
}

impl Default for CapSettings {
    fn default() -> Self {
        CapSettings {
            imap_capability: String::new(),
            imap_literal_minus: false,
            mailbox_list_index: true,
            imap_urlauth_host: String::new(),
            imap_metadata: false,
            mail_attribute_dict: String::new(),
            special_use: false,
            mail_plugins: Vec::new(),
            mail_uid: String::new(),
        }
    }
}

fn yes(v: &str) -> bool {
    matches!(v, "yes" | "y" | "1" | "true")
}

impl CapSettings {
    /// Reads the `key=value` lines of a config-service reply (the settings that differ from
    /// the defaults; the header line and the terminating empty line may be included).
    pub fn from_config_reply(reply: &[u8]) -> CapSettings {
        let mut s = CapSettings::default();
        for line in reply.lines() {
            let Some(eq) = line.find_byte(b'=') else {
                continue;
            };
            let key = line[..eq].to_str_lossy();
            let value = line[eq + 1..].to_str_lossy();
            let value = value.trim();
            match key.as_ref() {
                "imap_capability" => s.imap_capability = value.to_owned(),
                "imap_literal_minus" => s.imap_literal_minus = yes(value),
                "mailbox_list_index" => s.mailbox_list_index = yes(value),
                "imap_urlauth_host" => s.imap_urlauth_host = value.to_owned(),
                "imap_metadata" => s.imap_metadata = yes(value),
                "mail_attribute_dict" => s.mail_attribute_dict = value.to_owned(),
                "mail_uid" => s.mail_uid = value.to_owned(),
                "mail_plugins" => {
                    s.mail_plugins = value.split_whitespace().map(str::to_owned).collect()
                }
                k if k.starts_with("namespace/") && k.contains("/mailbox/") => s.special_use = true,
                _ => {}
            }
        }
        s
    }

    /// `mail_uid` as a number: digits as they are, a name through the passwd database;
    /// `None` when unset or unknown (a user without a userdb uid is then refused).
    pub fn mail_uid_number(&self) -> Option<u32> {
        let v = self.mail_uid.as_str();
        if v.is_empty() {
            return None;
        }
        if v.bytes().all(|b| b.is_ascii_digit()) {
            return v.parse().ok();
        }
        nix::unistd::User::from_name(v)
            .ok()
            .flatten()
            .map(|u| u.uid.as_raw())
    }

    /// The capability string and the plugins whose capabilities are not known (they may
    /// add some that the dispatcher's LOGIN reply then lacks).
    pub fn capability_string(&self) -> (String, Vec<String>) {
        let explicit = !self.imap_capability.is_empty() && !self.imap_capability.starts_with('+');
        let mut caps = if self.imap_capability.is_empty() {
            BUILTIN.to_owned()
        } else if let Some(extra) = self.imap_capability.strip_prefix('+') {
            format!("{BUILTIN} {extra}")
        } else {
            self.imap_capability.clone()
        };
        let mut unknown = Vec::new();
        let mut add = |c: &str| {
            if !explicit {
                caps.push(' ');
                caps.push_str(c);
            }
        };
        add(if self.imap_literal_minus {
            "LITERAL-"
        } else {
            "LITERAL+"
        });
        if self.mailbox_list_index {
            add("NOTIFY");
        }
        if !self.imap_urlauth_host.is_empty() && !self.mail_attribute_dict.is_empty() {
            add("URLAUTH");
            add("URLAUTH=BINARY");
        }
        if self.imap_metadata && !self.mail_attribute_dict.is_empty() {
            add("METADATA");
        }
        if self.special_use {
            add("SPECIAL-USE");
        }
        // Plugins initialise in the order of their module file names (`lib02_imap_acl_plugin.so`
        // before `lib11_imap_quota_plugin.so`); the hook of the last one runs first.
        let mut known: Vec<(&str, &[&str])> = Vec::new();
        for p in &self.mail_plugins {
            let name = p.strip_suffix("_plugin").unwrap_or(p);
            match PLUGIN_CAPS.iter().find(|(n, _, _)| *n == name) {
                Some((_, key, c)) if !known.iter().any(|(k, _)| k == key) => known.push((key, c)),
                Some(_) => {}
                None if name.starts_with("imap_") || UNMODELLED.contains(&name) => {
                    unknown.push(p.clone())
                }
                None => {}
            }
        }
        known.sort_by(|a, b| b.0.cmp(a.0));
        for (_, c) in known {
            for cap in c {
                add(cap);
            }
        }
        (caps, unknown)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mail_uid_from_the_config_reply() {
        let s = CapSettings::from_config_reply(b"mail_uid=60005\nmail_gid=65534\n");
        assert_eq!(s.mail_uid_number(), Some(60005));
        let s = CapSettings::from_config_reply(b"mail_uid=root\n");
        assert_eq!(s.mail_uid_number(), Some(0), "a name goes through passwd");
        let s = CapSettings::from_config_reply(b"mail_uid=no-such-user-here\n");
        assert_eq!(s.mail_uid_number(), None);
        assert_eq!(CapSettings::default().mail_uid_number(), None);
    }

    #[test]
    fn defaults_add_literal_plus_and_notify() {
        let (c, u) = CapSettings::default().capability_string();
        assert_eq!(c, format!("{BUILTIN} LITERAL+ NOTIFY"));
        assert!(u.is_empty());
    }

    #[test]
    fn settings_table() {
        let cases: &[(&str, &str)] = &[
            ("imap_literal_minus=yes\n", "LITERAL- NOTIFY"),
            ("mailbox_list_index=no\n", "LITERAL+"),
            (
                "namespace/inbox/mailbox/Sent/special_use=\\Sent\n",
                "LITERAL+ NOTIFY SPECIAL-USE",
            ),
            (
                "mail_plugins=quota imap_quota acl imap_acl\n",
                "LITERAL+ NOTIFY QUOTA ACL RIGHTS=texk",
            ),
            (
                "mail_plugins=acl imap_acl quota imap_quota\n",
                "LITERAL+ NOTIFY QUOTA ACL RIGHTS=texk",
            ),
            (
                "mail_plugins=imap_acl imap_zlib imap_quota\n",
                "LITERAL+ NOTIFY COMPRESS=DEFLATE QUOTA ACL RIGHTS=texk",
            ),
            (
                "mail_plugins=zlib imap_zlib\n",
                "LITERAL+ NOTIFY COMPRESS=DEFLATE",
            ),
            ("imap_metadata=yes\n", "LITERAL+ NOTIFY"),
            (
                "imap_metadata=yes\nmail_attribute_dict=file:/x\n",
                "LITERAL+ NOTIFY METADATA",
            ),
            (
                "imap_urlauth_host=h\nmail_attribute_dict=file:/x\n",
                "LITERAL+ NOTIFY URLAUTH URLAUTH=BINARY",
            ),
        ];
        for (reply, tail) in cases {
            let (c, _) = CapSettings::from_config_reply(format!("\n{reply}\n").as_bytes())
                .capability_string();
            assert_eq!(c, format!("{BUILTIN} {tail}"), "{reply}");
        }
    }

    #[test]
    fn explicit_and_appended_capability() {
        let s = CapSettings::from_config_reply(
            b"imap_capability=IMAP4rev1 IDLE\nmail_plugins=imap_quota\n",
        );
        assert_eq!(s.capability_string().0, "IMAP4rev1 IDLE");
        let s = CapSettings::from_config_reply(b"imap_capability=+XFOO\n");
        assert_eq!(
            s.capability_string().0,
            format!("{BUILTIN} XFOO LITERAL+ NOTIFY")
        );
    }

    #[test]
    fn unknown_imap_plugins_are_reported() {
        let s = CapSettings::from_config_reply(
            b"mail_plugins=imap_sieve imap_quota fts fts_solr old_stats imap_old_stats\n",
        );
        let (c, u) = s.capability_string();
        assert_eq!(c, format!("{BUILTIN} LITERAL+ NOTIFY QUOTA"));
        assert_eq!(u, vec!["imap_sieve".to_owned(), "fts_solr".to_owned()]);
    }
}
