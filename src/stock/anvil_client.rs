//! A raw anvil v1 client over a unix socket: send lines, read reply lines and dumps.
//! It does not interpret replies; [`crate::wire::anvil`] decodes them.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;

use super::{Result, StockError, CLIENT_TIMEOUT};
use crate::wire::anvil::VERSION_LINE;

/// One connection to an anvil socket.
#[derive(Debug)]
pub struct AnvilClient {
    reader: BufReader<UnixStream>,
}

impl AnvilClient {
    /// Connects and sends the `VERSION\tanvil\t1\t0` handshake.
    pub fn connect(path: &Path) -> Result<AnvilClient> {
        let mut client = AnvilClient::connect_raw(path)?;
        client.send_raw(VERSION_LINE)?;
        Ok(client)
    }

    /// Connects without sending anything.
    pub fn connect_raw(path: &Path) -> Result<AnvilClient> {
        let stream = UnixStream::connect(path)
            .map_err(|e| StockError::io(format!("connect {}", path.display()), e))?;
        stream
            .set_read_timeout(Some(CLIENT_TIMEOUT))
            .and_then(|()| stream.set_write_timeout(Some(CLIENT_TIMEOUT)))
            .map_err(|e| StockError::io("anvil: set timeouts", e))?;
        Ok(AnvilClient {
            reader: BufReader::new(stream),
        })
    }

    /// Writes `bytes` as they are (one write).
    pub fn send_raw(&mut self, bytes: &[u8]) -> Result<()> {
        self.reader
            .get_mut()
            .write_all(bytes)
            .map_err(|e| StockError::io("anvil: write", e))
    }

    /// Writes `line` plus LF.
    pub fn send_line(&mut self, line: &[u8]) -> Result<()> {
        let mut bytes = Vec::with_capacity(line.len() + 1);
        bytes.extend_from_slice(line);
        bytes.push(b'\n');
        self.send_raw(&bytes)
    }

    /// Reads one reply line, without its LF. [`StockError::Closed`] at EOF.
    pub fn read_line(&mut self) -> Result<Vec<u8>> {
        let mut buf = Vec::new();
        let n = self
            .reader
            .read_until(b'\n', &mut buf)
            .map_err(|e| StockError::io("anvil: read", e))?;
        if n == 0 || buf.last() != Some(&b'\n') {
            return Err(StockError::Closed("anvil"));
        }
        buf.pop();
        Ok(buf)
    }

    /// Sends `line` and reads the one-line reply.
    pub fn request(&mut self, line: &[u8]) -> Result<Vec<u8>> {
        self.send_line(line)?;
        self.read_line()
    }

    /// Reads lines until the empty terminator line; returns the rows (without LF).
    pub fn read_dump(&mut self) -> Result<Vec<Vec<u8>>> {
        let mut rows = Vec::new();
        loop {
            let line = self.read_line()?;
            if line.is_empty() {
                return Ok(rows);
            }
            rows.push(line);
        }
    }

    /// Sends a dump command (`CONNECT-DUMP`, `PENALTY-DUMP`) and reads its rows.
    pub fn dump(&mut self, command: &[u8]) -> Result<Vec<Vec<u8>>> {
        self.send_line(command)?;
        self.read_dump()
    }

    /// The underlying socket (e.g. for shutdown or raw reads).
    pub fn stream(&self) -> &UnixStream {
        self.reader.get_ref()
    }
}
