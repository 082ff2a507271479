//! The master status record: 12 bytes in native byte order, written by every service
//! process to fd 5 (`MASTER_STATUS_FD`). See master-interface.md §6.

/// One status record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatusRecord {
    /// The sender's pid.
    pub pid: i32,
    /// The sender's `GENERATION` from its environment (stock calls it "uid").
    pub generation: u32,
    /// How many more clients the process will accept right now.
    pub available_count: u32,
}

/// Size of one record on the wire.
pub const STATUS_RECORD_LEN: usize = 12;

impl StatusRecord {
    /// Encodes the record in native byte order.
    pub fn encode(&self) -> [u8; STATUS_RECORD_LEN] {
        let mut out = [0u8; STATUS_RECORD_LEN];
        out[0..4].copy_from_slice(&self.pid.to_ne_bytes());
        out[4..8].copy_from_slice(&self.generation.to_ne_bytes());
        out[8..12].copy_from_slice(&self.available_count.to_ne_bytes());
        out
    }

    /// Decodes one record from the first 12 bytes of `buf`; `None` if fewer are given.
    pub fn decode(buf: &[u8]) -> Option<StatusRecord> {
        let b = buf.get(..STATUS_RECORD_LEN)?;
        Some(StatusRecord {
            pid: i32::from_ne_bytes(b[0..4].try_into().ok()?),
            generation: u32::from_ne_bytes(b[4..8].try_into().ok()?),
            available_count: u32::from_ne_bytes(b[8..12].try_into().ok()?),
        })
    }
}
