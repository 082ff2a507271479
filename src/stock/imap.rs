//! A minimal blocking IMAP client: greeting, LOGIN, arbitrary tagged commands, LOGOUT.

use std::time::Duration;

use super::line_conn::LineConn;
use super::{Result, StockError};

/// One IMAP connection to 127.0.0.1.
#[derive(Debug)]
pub struct ImapClient {
    conn: LineConn,
    greeting: String,
    next_tag: u32,
}

/// The reply to one tagged command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImapReply {
    /// Untagged lines (`* …`) received before the tagged one.
    pub untagged: Vec<String>,
    /// The tagged line without its tag, e.g. `OK [CAPABILITY …] Logged in`.
    pub tagged: String,
}

impl ImapReply {
    /// True for a tagged `OK`.
    pub fn is_ok(&self) -> bool {
        self.tagged.starts_with("OK")
    }
}

impl ImapClient {
    /// Connects and reads the `* OK` greeting.
    pub fn connect(port: u16) -> Result<ImapClient> {
        let mut conn = LineConn::connect(port, "imap")?;
        let greeting = conn.read_line()?;
        if !greeting.starts_with("* OK") {
            return Err(StockError::Protocol {
                peer: "imap",
                line: greeting,
            });
        }
        Ok(ImapClient {
            conn,
            greeting,
            next_tag: 1,
        })
    }

    /// The greeting line.
    pub fn greeting(&self) -> &str {
        &self.greeting
    }

    /// Sends `<tag> <command>` and reads up to the tagged reply.
    pub fn command(&mut self, command: &str) -> Result<ImapReply> {
        let tag = format!("a{}", self.next_tag);
        self.next_tag += 1;
        self.conn.send(&format!("{tag} {command}"))?;
        let prefix = format!("{tag} ");
        let mut untagged = Vec::new();
        loop {
            let line = self.conn.read_line()?;
            if let Some(rest) = line.strip_prefix(&prefix) {
                return Ok(ImapReply {
                    untagged,
                    tagged: rest.to_owned(),
                });
            }
            untagged.push(line);
        }
    }

    /// `LOGIN "user" "password"`; returns the tagged reply (OK or NO alike).
    pub fn login(&mut self, user: &str, password: &str) -> Result<ImapReply> {
        self.command(&format!("LOGIN {} {}", quote(user), quote(password)))
    }

    /// `LOGOUT`, then waits for the server to close.
    pub fn logout(mut self) -> Result<()> {
        self.command("LOGOUT")?;
        self.conn.wait_closed(super::CLIENT_TIMEOUT)?;
        Ok(())
    }

    /// Waits until the server closes the connection; returns the lines it sent before.
    pub fn wait_closed(&mut self, deadline: Duration) -> Result<Vec<String>> {
        self.conn.wait_closed(deadline)
    }

    /// Closes the socket without LOGOUT.
    pub fn abort(mut self) {
        self.conn.shutdown();
    }

    /// Which peer this is (for messages).
    pub fn peer(&self) -> &'static str {
        self.conn.peer()
    }
}

/// An IMAP quoted string.
fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for ch in s.chars() {
        if ch == '"' || ch == '\\' {
            out.push('\\');
        }
        out.push(ch);
    }
    out.push('"');
    out
}
