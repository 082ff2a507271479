//! A line-oriented TCP connection with timeouts, shared by the IMAP and POP3 clients.

use std::io::{BufRead, BufReader, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use super::{Result, StockError, CLIENT_TIMEOUT};

#[derive(Debug)]
pub(crate) struct LineConn {
    reader: BufReader<TcpStream>,
    peer: &'static str,
}

impl LineConn {
    pub(crate) fn connect(port: u16, peer: &'static str) -> Result<LineConn> {
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let stream = TcpStream::connect_timeout(&addr, CLIENT_TIMEOUT)
            .map_err(|e| StockError::io(format!("{peer}: connect {addr}"), e))?;
        stream
            .set_read_timeout(Some(CLIENT_TIMEOUT))
            .and_then(|()| stream.set_write_timeout(Some(CLIENT_TIMEOUT)))
            .map_err(|e| StockError::io(format!("{peer}: set timeouts"), e))?;
        Ok(LineConn {
            reader: BufReader::new(stream),
            peer,
        })
    }

    pub(crate) fn peer(&self) -> &'static str {
        self.peer
    }

    /// Sends `line` with CRLF.
    pub(crate) fn send(&mut self, line: &str) -> Result<()> {
        let mut bytes = Vec::with_capacity(line.len() + 2);
        bytes.extend_from_slice(line.as_bytes());
        bytes.extend_from_slice(b"\r\n");
        self.reader
            .get_mut()
            .write_all(&bytes)
            .map_err(|e| StockError::io(format!("{}: write", self.peer), e))
    }

    /// Reads one line without its CRLF; [`StockError::Closed`] at EOF.
    pub(crate) fn read_line(&mut self) -> Result<String> {
        let mut buf = Vec::new();
        let n = self
            .reader
            .read_until(b'\n', &mut buf)
            .map_err(|e| StockError::io(format!("{}: read", self.peer), e))?;
        if n == 0 {
            return Err(StockError::Closed(self.peer));
        }
        while matches!(buf.last(), Some(b'\n' | b'\r')) {
            buf.pop();
        }
        Ok(String::from_utf8_lossy(&buf).into_owned())
    }

    /// Reads until the peer closes (or resets) the connection, within `deadline`.
    /// Returns the lines received before the close.
    pub(crate) fn wait_closed(&mut self, deadline: Duration) -> Result<Vec<String>> {
        let end = Instant::now() + deadline;
        let mut lines = Vec::new();
        loop {
            let left = end.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(StockError::io(
                    format!("{}: waiting for close", self.peer),
                    std::io::Error::new(std::io::ErrorKind::TimedOut, "connection still open"),
                ));
            }
            self.reader
                .get_ref()
                .set_read_timeout(Some(left))
                .map_err(|e| StockError::io(format!("{}: set timeout", self.peer), e))?;
            match self.read_line() {
                Ok(line) => lines.push(line),
                Err(StockError::Closed(_)) => return Ok(lines),
                Err(StockError::Io { source, .. })
                    if source.kind() == std::io::ErrorKind::ConnectionReset =>
                {
                    return Ok(lines)
                }
                Err(e) => return Err(e),
            }
        }
    }

    pub(crate) fn shutdown(&mut self) {
        let _ = self.reader.get_ref().shutdown(Shutdown::Both);
    }
}
