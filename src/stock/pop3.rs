//! A minimal blocking POP3 client: greeting, USER/PASS, QUIT.

use std::time::Duration;

use super::line_conn::LineConn;
use super::{Result, StockError};

/// One POP3 connection to 127.0.0.1.
#[derive(Debug)]
pub struct Pop3Client {
    conn: LineConn,
    greeting: String,
}

impl Pop3Client {
    /// Connects and reads the `+OK` greeting.
    pub fn connect(port: u16) -> Result<Pop3Client> {
        let mut conn = LineConn::connect(port, "pop3")?;
        let greeting = conn.read_line()?;
        if !greeting.starts_with("+OK") {
            return Err(StockError::Protocol {
                peer: "pop3",
                line: greeting,
            });
        }
        Ok(Pop3Client { conn, greeting })
    }

    /// The greeting line.
    pub fn greeting(&self) -> &str {
        &self.greeting
    }

    /// Sends one command line and returns the one-line reply.
    pub fn command(&mut self, line: &str) -> Result<String> {
        self.conn.send(line)?;
        self.conn.read_line()
    }

    /// `USER` then `PASS`; returns the reply to PASS (`+OK …` or `-ERR …`).
    pub fn login(&mut self, user: &str, password: &str) -> Result<String> {
        let reply = self.command(&format!("USER {user}"))?;
        if !reply.starts_with("+OK") {
            return Err(StockError::Protocol {
                peer: "pop3",
                line: reply,
            });
        }
        self.command(&format!("PASS {password}"))
    }

    /// `QUIT`, then waits for the server to close.
    pub fn quit(mut self) -> Result<()> {
        self.command("QUIT")?;
        self.conn.wait_closed(super::CLIENT_TIMEOUT)?;
        Ok(())
    }

    /// Waits until the server closes the connection; returns the lines it sent before.
    pub fn wait_closed(&mut self, deadline: Duration) -> Result<Vec<String>> {
        self.conn.wait_closed(deadline)
    }

    /// Closes the socket without QUIT.
    pub fn abort(mut self) {
        self.conn.shutdown();
    }
}
