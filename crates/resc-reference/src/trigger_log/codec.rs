//! The binary encoding of trigger records, shared by the backends.
//!
//! A record is, little-endian: the invocation (`u64`), the source (a tag
//! byte: `0` external, `1` component, followed for a component by its index
//! and instance as two `u32`), the payload length (`u32`) and the payload.
//! Explicit rather than derived, so that the stored format never changes
//! with a serde attribute or a library version.

use resc_core::ids::{ComputeId, InvocationId};
use resc_core::trigger_log::{LogError, TriggerRecord, TriggerSource};

/// The largest payload any backend stores (its length is a `u32`, and the
/// file log frames must stay well within memory).
pub(crate) const MAX_PAYLOAD: u64 = 1 << 30;

const SOURCE_EXTERNAL: u8 = 0;
const SOURCE_COMPONENT: u8 = 1;

/// The encoded size of `record`, or `TooLarge`.
pub(crate) fn encoded_len(record: &TriggerRecord) -> Result<usize, LogError> {
    let payload = record.payload.len() as u64;
    if payload > MAX_PAYLOAD {
        return Err(LogError::TooLarge { bytes: payload, max: MAX_PAYLOAD });
    }
    let source = match record.source {
        TriggerSource::External => 1,
        TriggerSource::Component { .. } => 9,
    };
    Ok(8 + source + 4 + record.payload.len())
}

/// Appends the encoding of `record` to `out` (check [`encoded_len`] first).
pub(crate) fn encode_record(record: &TriggerRecord, out: &mut Vec<u8>) {
    out.extend_from_slice(&record.invocation.0.to_le_bytes());
    match record.source {
        TriggerSource::External => out.push(SOURCE_EXTERNAL),
        TriggerSource::Component { component, instance } => {
            out.push(SOURCE_COMPONENT);
            out.extend_from_slice(&component.0.to_le_bytes());
            out.extend_from_slice(&instance.to_le_bytes());
        }
    }
    out.extend_from_slice(&(record.payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&record.payload);
}

/// A cursor over bytes that fails with a reason instead of panicking.
pub(crate) struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(bytes: &'a [u8]) -> Self {
        Reader { bytes, at: 0 }
    }

    pub(crate) fn position(&self) -> usize {
        self.at
    }

    pub(crate) fn remaining(&self) -> usize {
        self.bytes.len() - self.at
    }

    pub(crate) fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], String> {
        if self.remaining() < n {
            return Err(format!("{what} needs {n} bytes at offset {}, only {} remain", self.at, self.remaining()));
        }
        let out = &self.bytes[self.at..self.at + n];
        self.at += n;
        Ok(out)
    }

    pub(crate) fn u8(&mut self, what: &str) -> Result<u8, String> {
        Ok(self.take(1, what)?[0])
    }

    pub(crate) fn u32(&mut self, what: &str) -> Result<u32, String> {
        let mut b = [0u8; 4];
        b.copy_from_slice(self.take(4, what)?);
        Ok(u32::from_le_bytes(b))
    }

    pub(crate) fn u64(&mut self, what: &str) -> Result<u64, String> {
        let mut b = [0u8; 8];
        b.copy_from_slice(self.take(8, what)?);
        Ok(u64::from_le_bytes(b))
    }
}

/// Decodes one record from `reader`.
pub(crate) fn decode_record(reader: &mut Reader<'_>) -> Result<TriggerRecord, String> {
    let invocation = InvocationId(reader.u64("the invocation")?);
    let source = match reader.u8("the source tag")? {
        SOURCE_EXTERNAL => TriggerSource::External,
        SOURCE_COMPONENT => TriggerSource::Component {
            component: ComputeId(reader.u32("the component")?),
            instance: reader.u32("the instance")?,
        },
        other => return Err(format!("unknown source tag {other}")),
    };
    let len = reader.u32("the payload length")? as usize;
    let payload = reader.take(len, "the payload")?.to_vec();
    Ok(TriggerRecord { invocation, source, payload })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn records_round_trip() {
        for record in [
            TriggerRecord { invocation: InvocationId(7), source: TriggerSource::External, payload: vec![] },
            TriggerRecord {
                invocation: InvocationId(u64::MAX),
                source: TriggerSource::Component { component: ComputeId(3), instance: 9 },
                payload: (0..=255).collect(),
            },
        ] {
            let mut out = Vec::new();
            encode_record(&record, &mut out);
            assert_eq!(out.len(), encoded_len(&record).unwrap());
            let mut reader = Reader::new(&out);
            assert_eq!(decode_record(&mut reader).unwrap(), record);
            assert_eq!(reader.remaining(), 0);
            // Every truncation is an error, never a panic.
            for cut in 0..out.len() {
                assert!(decode_record(&mut Reader::new(&out[..cut])).is_err());
            }
        }
    }
}
