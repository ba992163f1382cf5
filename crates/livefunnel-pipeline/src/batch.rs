//! A partition's messages as the consumer loop hands them to its task: each message's
//! offset, with every key and payload copied into one buffer. A `Vec` per key and per
//! payload cost two allocations and two frees per message, which a profile of the
//! null-sink bench put right after the engine's own functions.

/// One partition's messages, in offset order.
#[derive(Debug, Default)]
pub struct MsgBatch {
    bytes: Vec<u8>,
    msgs: Vec<Slot>,
}

/// Where one message's key and payload are in [`MsgBatch::bytes`]: the key from
/// `start`, then the payload.
#[derive(Debug, Clone, Copy)]
struct Slot {
    offset: i64,
    start: usize,
    key_len: u32,
    payload_len: u32,
}

/// A length standing for "absent" (Kafka keeps a missing key apart from an empty one).
/// No Kafka message comes near it: brokers cap messages at 2 GiB.
const ABSENT: u32 = u32::MAX;

/// One message of a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Msg<'a> {
    pub offset: i64,
    pub key: Option<&'a [u8]>,
    pub payload: Option<&'a [u8]>,
}

impl MsgBatch {
    /// An empty batch with room for `msgs` messages of `bytes` bytes in all.
    pub fn with_capacity(msgs: usize, bytes: usize) -> MsgBatch {
        MsgBatch { bytes: Vec::with_capacity(bytes), msgs: Vec::with_capacity(msgs) }
    }

    pub fn push(&mut self, offset: i64, key: Option<&[u8]>, payload: Option<&[u8]>) {
        let start = self.bytes.len();
        let key_len = self.append(key);
        let payload_len = self.append(payload);
        self.msgs.push(Slot { offset, start, key_len, payload_len });
    }

    /// Copies `part` in and returns its length, or [`ABSENT`].
    fn append(&mut self, part: Option<&[u8]>) -> u32 {
        match part {
            Some(b) => {
                // 4 GiB or more cannot come from Kafka (brokers cap a message at
                // 2 GiB); such a part would not be copied, and would read back as absent.
                let len = u32::try_from(b.len()).unwrap_or(ABSENT);
                if len != ABSENT {
                    self.bytes.extend_from_slice(b);
                }
                len
            }
            None => ABSENT,
        }
    }

    /// Adds `other`'s messages after this batch's.
    pub fn extend(&mut self, other: MsgBatch) {
        let shift = self.bytes.len();
        self.bytes.extend_from_slice(&other.bytes);
        self.msgs.extend(other.msgs.into_iter().map(|s| Slot { start: s.start + shift, ..s }));
    }

    pub fn len(&self) -> usize {
        self.msgs.len()
    }

    /// The bytes of its keys and payloads.
    pub fn bytes_len(&self) -> usize {
        self.bytes.len()
    }

    pub fn iter(&self) -> impl Iterator<Item = Msg<'_>> + '_ {
        self.msgs.iter().map(|s| {
            let key_end = s.start + if s.key_len == ABSENT { 0 } else { s.key_len as usize };
            let part =
                |from: usize, len: u32| (len != ABSENT).then(|| &self.bytes[from..from + len as usize]);
            Msg { offset: s.offset, key: part(s.start, s.key_len), payload: part(key_end, s.payload_len) }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type Owned = (i64, Option<Vec<u8>>, Option<Vec<u8>>);

    fn owned(b: &MsgBatch) -> Vec<Owned> {
        b.iter().map(|m| (m.offset, m.key.map(<[u8]>::to_vec), m.payload.map(<[u8]>::to_vec))).collect()
    }

    fn batch(msgs: &[Owned]) -> MsgBatch {
        let mut b = MsgBatch::with_capacity(1, 1);
        for (o, k, p) in msgs {
            b.push(*o, k.as_deref(), p.as_deref());
        }
        b
    }

    #[test]
    fn messages_come_back_as_pushed_absent_and_empty_parts_apart() {
        let msgs: Vec<Owned> = vec![
            (7, Some(b"room-1".to_vec()), Some(br#"{"a":1}"#.to_vec())),
            (8, None, Some(b"x".to_vec())),
            (9, Some(Vec::new()), None),
            (10, None, None),
            (12, Some(b"k".to_vec()), Some(Vec::new())),
            (13, Some(vec![0xff; 3000]), Some(vec![1; 5000])),
        ];
        let b = batch(&msgs);
        assert_eq!(b.len(), msgs.len());
        assert_eq!(b.bytes_len(), 6 + 7 + 1 + 1 + 3000 + 5000);
        assert_eq!(owned(&b), msgs);
        assert_eq!(MsgBatch::default().len(), 0);
    }

    #[test]
    fn an_extended_batch_is_the_two_in_order() {
        let first: Vec<Owned> =
            vec![(1, Some(b"a".to_vec()), Some(b"one".to_vec())), (2, None, Some(b"two".to_vec()))];
        let second: Vec<Owned> =
            vec![(3, Some(b"bb".to_vec()), None), (4, Some(b"c".to_vec()), Some(b"four".to_vec()))];
        let mut b = batch(&first);
        b.extend(batch(&second));
        assert_eq!(owned(&b), [first, second].concat());
        let mut empty = MsgBatch::default();
        empty.extend(batch(&[(5, None, Some(b"five".to_vec()))]));
        assert_eq!(owned(&empty), vec![(5, None, Some(b"five".to_vec()))]);
    }
}
