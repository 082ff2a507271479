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

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The first record stock anvil sent (anvil-protocol.md §1.6): `pid, 1, 1000` [live],
    /// little endian on x86-64.
    #[test]
    #[cfg(target_endian = "little")]
    fn known_answer() {
        let rec = StatusRecord {
            pid: 24310,
            generation: 1,
            available_count: 1000,
        };
        let bytes = [0xf6, 0x5e, 0, 0, 1, 0, 0, 0, 0xe8, 0x03, 0, 0];
        assert_eq!(rec.encode(), bytes);
        assert_eq!(StatusRecord::decode(&bytes), Some(rec));
    }

    #[test]
    fn short_buffers_give_none() {
        let bytes = StatusRecord {
            pid: 1,
            generation: 2,
            available_count: 999,
        }
        .encode();
        for end in 0..STATUS_RECORD_LEN {
            assert_eq!(StatusRecord::decode(&bytes[..end]), None);
        }
    }

    #[test]
    fn decode_reads_only_the_first_record() {
        let a = StatusRecord {
            pid: 10,
            generation: 3,
            available_count: 0,
        };
        let b = StatusRecord {
            pid: 11,
            generation: 3,
            available_count: 1,
        };
        let mut buf = a.encode().to_vec();
        buf.extend_from_slice(&b.encode());
        assert_eq!(StatusRecord::decode(&buf), Some(a));
        assert_eq!(StatusRecord::decode(&buf[STATUS_RECORD_LEN..]), Some(b));
    }

    proptest! {
        #[test]
        fn round_trip(pid in any::<i32>(), generation in any::<u32>(), available_count in any::<u32>()) {
            let rec = StatusRecord { pid, generation, available_count };
            prop_assert_eq!(StatusRecord::decode(&rec.encode()), Some(rec));
        }

        #[test]
        fn bytes_round_trip(bytes in proptest::array::uniform12(any::<u8>())) {
            let rec = StatusRecord::decode(&bytes).unwrap();
            prop_assert_eq!(rec.encode(), bytes);
        }
    }
}
