//! The TCP transport's frames.
//!
//! Every frame is a little-endian `u32` body length followed by the body.
//! A request body is an operation code, a request id, the operation's fixed
//! fields, then a tail (the bytes of a write, the payload of a message). A
//! response body is a status, the request id, the fixed fields of that
//! status (or of the operation, when it succeeded), then a tail (the bytes
//! of a read, an error's message).
//!
//! Decoding is a pure function of bytes: it never panics and never
//! allocates more than the frame holds, whatever it is given (a fuzz target
//! and a property test feed it garbage).

use resc_core::ids::{AccessKey, ComputeId, Endpoint, InvocationId, RegionId};
use thiserror::Error;

/// Largest body a frame may have: a 64 MiB write plus its header.
pub const MAX_BODY: u32 = (64 << 20) + 128;
/// Largest message payload: the receiver holds a whole message in memory.
pub const MAX_MESSAGE: u32 = 16 << 20;

/// A request's operation, with its fixed fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// The next `count` requests form one batch: after one fails, the rest
    /// are answered [`Status::Skipped`] without running.
    Batch {
        /// Requests in the batch.
        count: u32,
    },
    /// Read `len` bytes at `offset` of a region.
    Read {
        /// The region.
        region: RegionId,
        /// Its key.
        key: AccessKey,
        /// Offset in the region.
        offset: u64,
        /// Bytes to read.
        len: u32,
    },
    /// Write the tail at `offset` of a region.
    Write {
        /// The region.
        region: RegionId,
        /// Its key.
        key: AccessKey,
        /// Offset in the region.
        offset: u64,
    },
    /// Allocate a region of `bytes`.
    Allocate {
        /// Its length.
        bytes: u64,
    },
    /// Free a region.
    Free {
        /// The region.
        region: RegionId,
        /// Its key.
        key: AccessKey,
    },
    /// Deliver the tail as a message from `from` to the endpoint `to`, open on the server's node.
    Send {
        /// Sender.
        from: Endpoint,
        /// Receiver.
        to: Endpoint,
    },
    /// The node's capacity and allocated bytes.
    Stats,
}

/// A decoded request head: everything but the tail, and the tail's length.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestHead {
    /// Chosen by the client; echoed in the response.
    pub id: u64,
    /// What to do.
    pub op: Op,
    /// Bytes that follow the fixed fields.
    pub tail: u32,
}

/// How a request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Done. A read's tail holds its bytes; an allocation's fixed fields the region.
    Ok,
    /// Wrong access key.
    AccessDenied,
    /// The range is outside the region.
    OutOfBounds {
        /// Requested offset.
        offset: u64,
        /// Requested length.
        len: u64,
        /// The region's length.
        region_len: u64,
    },
    /// No such region.
    UnknownRegion,
    /// No such endpoint open on this node.
    UnknownEndpoint,
    /// Not enough capacity.
    OutOfMemory {
        /// Requested bytes.
        requested: u64,
        /// Free bytes.
        free: u64,
    },
    /// A zero-length allocation.
    ZeroLength,
    /// Not run: an earlier request of its batch failed.
    Skipped,
    /// The request could not be decoded; the tail says why. The server closes the connection.
    Malformed,
    /// The server failed; the tail says why.
    System,
}

/// Why bytes are not a frame.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum WireError {
    /// The bytes end before the frame does.
    #[error("frame truncated: {0}")]
    Truncated(&'static str),
    /// An unknown operation or status code.
    #[error("unknown {what} code {code}")]
    UnknownCode {
        /// Operation or status.
        what: &'static str,
        /// The code.
        code: u8,
    },
    /// A body longer than [`MAX_BODY`].
    #[error("frame body of {0} bytes exceeds the {MAX_BODY}-byte limit")]
    TooLarge(u32),
    /// The tail's length does not match the operation.
    #[error("{0}")]
    Inconsistent(&'static str),
}

/// Reads fixed-size little-endian fields off a byte slice.
struct Cursor<'a> {
    bytes: &'a [u8],
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], WireError> {
        if self.bytes.len() < n {
            return Err(WireError::Truncated(what));
        }
        let (head, rest) = self.bytes.split_at(n);
        self.bytes = rest;
        Ok(head)
    }

    fn u8(&mut self, what: &'static str) -> Result<u8, WireError> {
        Ok(self.take(1, what)?[0])
    }

    fn u32(&mut self, what: &'static str) -> Result<u32, WireError> {
        let b = self.take(4, what)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn u64(&mut self, what: &'static str) -> Result<u64, WireError> {
        let b = self.take(8, what)?;
        Ok(u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]))
    }

    fn endpoint(&mut self, what: &'static str) -> Result<Endpoint, WireError> {
        Ok(Endpoint {
            invocation: InvocationId(self.u64(what)?),
            component: ComputeId(self.u32(what)?),
            instance: self.u32(what)?,
        })
    }
}

const OP_BATCH: u8 = 1;
const OP_READ: u8 = 2;
const OP_WRITE: u8 = 3;
const OP_ALLOCATE: u8 = 4;
const OP_FREE: u8 = 5;
const OP_SEND: u8 = 6;
const OP_STATS: u8 = 7;

/// Bytes of a request head (after the length prefix) for each operation code.
pub fn request_head_len(op: u8) -> Option<usize> {
    Some(
        1 + 8
            + match op {
                OP_BATCH => 4,
                OP_READ => 8 + 8 + 8 + 4,
                OP_WRITE => 8 + 8 + 8,
                OP_ALLOCATE => 8,
                OP_FREE => 8 + 8,
                OP_SEND => 16 + 16,
                OP_STATS => 0,
                _ => return None,
            },
    )
}

/// Decodes a request head from a body's first bytes, given the body's length.
pub fn decode_request_head(body_len: u32, head: &[u8]) -> Result<RequestHead, WireError> {
    if body_len > MAX_BODY {
        return Err(WireError::TooLarge(body_len));
    }
    let mut c = Cursor { bytes: head };
    let code = c.u8("operation")?;
    let fixed = request_head_len(code).ok_or(WireError::UnknownCode { what: "operation", code })?;
    let tail = body_len.checked_sub(fixed as u32).ok_or(WireError::Truncated("request head"))?;
    let id = c.u64("request id")?;
    let op = match code {
        OP_BATCH => Op::Batch { count: c.u32("batch count")? },
        OP_READ => Op::Read {
            region: RegionId(c.u64("region")?),
            key: AccessKey(c.u64("key")?),
            offset: c.u64("offset")?,
            len: c.u32("length")?,
        },
        OP_WRITE => {
            Op::Write { region: RegionId(c.u64("region")?), key: AccessKey(c.u64("key")?), offset: c.u64("offset")? }
        }
        OP_ALLOCATE => Op::Allocate { bytes: c.u64("bytes")? },
        OP_FREE => Op::Free { region: RegionId(c.u64("region")?), key: AccessKey(c.u64("key")?) },
        OP_SEND => Op::Send { from: c.endpoint("sender")?, to: c.endpoint("receiver")? },
        _ => Op::Stats,
    };
    if tail > 0 && !matches!(op, Op::Write { .. } | Op::Send { .. }) {
        return Err(WireError::Inconsistent("only writes and messages carry a tail"));
    }
    if matches!(op, Op::Send { .. }) && tail > MAX_MESSAGE {
        return Err(WireError::Inconsistent("a message over the 16 MiB limit"));
    }
    if let Op::Read { len, .. } = op {
        if len > MAX_BODY - RESPONSE_HEAD as u32 {
            return Err(WireError::Inconsistent("a read longer than a frame can answer"));
        }
    }
    Ok(RequestHead { id, op, tail })
}

/// Decodes a whole request frame (length prefix included): its head and tail.
pub fn decode_request(frame: &[u8]) -> Result<(RequestHead, &[u8]), WireError> {
    let mut c = Cursor { bytes: frame };
    let body_len = c.u32("length prefix")?;
    if body_len > MAX_BODY {
        return Err(WireError::TooLarge(body_len));
    }
    let body = c.take(body_len as usize, "body")?;
    let code = *body.first().ok_or(WireError::Truncated("operation"))?;
    let fixed = request_head_len(code).ok_or(WireError::UnknownCode { what: "operation", code })?;
    let head = decode_request_head(body_len, body.get(..fixed).ok_or(WireError::Truncated("request head"))?)?;
    Ok((head, &body[fixed..]))
}

fn put_u32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_le_bytes());
}

fn put_u64(out: &mut Vec<u8>, v: u64) {
    out.extend_from_slice(&v.to_le_bytes());
}

fn put_endpoint(out: &mut Vec<u8>, e: &Endpoint) {
    put_u64(out, e.invocation.0);
    put_u32(out, e.component.0);
    put_u32(out, e.instance);
}

/// Appends a request frame's prefix and head to `out`; the caller writes
/// the `tail` bytes right after (a write's data, a message's payload).
pub fn encode_request_head(out: &mut Vec<u8>, id: u64, op: &Op, tail: u32) {
    let (code, fixed) = match op {
        Op::Batch { .. } => (OP_BATCH, 4),
        Op::Read { .. } => (OP_READ, 28),
        Op::Write { .. } => (OP_WRITE, 24),
        Op::Allocate { .. } => (OP_ALLOCATE, 8),
        Op::Free { .. } => (OP_FREE, 16),
        Op::Send { .. } => (OP_SEND, 32),
        Op::Stats => (OP_STATS, 0),
    };
    put_u32(out, 1 + 8 + fixed + tail);
    out.push(code);
    put_u64(out, id);
    match *op {
        Op::Batch { count } => put_u32(out, count),
        Op::Read { region, key, offset, len } => {
            put_u64(out, region.0);
            put_u64(out, key.0);
            put_u64(out, offset);
            put_u32(out, len);
        }
        Op::Write { region, key, offset } => {
            put_u64(out, region.0);
            put_u64(out, key.0);
            put_u64(out, offset);
        }
        Op::Allocate { bytes } => put_u64(out, bytes),
        Op::Free { region, key } => {
            put_u64(out, region.0);
            put_u64(out, key.0);
        }
        Op::Send { ref from, ref to } => {
            put_endpoint(out, from);
            put_endpoint(out, to);
        }
        Op::Stats => {}
    }
}

const ST_OK: u8 = 0;
const ST_ACCESS_DENIED: u8 = 1;
const ST_OUT_OF_BOUNDS: u8 = 2;
const ST_UNKNOWN_REGION: u8 = 3;
const ST_UNKNOWN_ENDPOINT: u8 = 4;
const ST_OUT_OF_MEMORY: u8 = 5;
const ST_ZERO_LENGTH: u8 = 6;
const ST_SKIPPED: u8 = 7;
const ST_MALFORMED: u8 = 8;
const ST_SYSTEM: u8 = 9;

/// A decoded response head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResponseHead {
    /// The request's id.
    pub id: u64,
    /// How it ended.
    pub status: Status,
    /// Fixed result fields of a successful request (allocate: region, key,
    /// length; stats: capacity, allocated; others: zeros).
    pub values: [u64; 3],
    /// Bytes that follow.
    pub tail: u32,
}

/// Bytes of every response head after the length prefix: status, id, three values.
pub const RESPONSE_HEAD: usize = 1 + 8 + 24;

/// Appends a response frame's prefix and head; the caller writes the tail.
pub fn encode_response_head(out: &mut Vec<u8>, id: u64, status: Status, values: [u64; 3], tail: u32) {
    let (code, values) = match status {
        Status::Ok => (ST_OK, values),
        Status::AccessDenied => (ST_ACCESS_DENIED, [0; 3]),
        Status::OutOfBounds { offset, len, region_len } => (ST_OUT_OF_BOUNDS, [offset, len, region_len]),
        Status::UnknownRegion => (ST_UNKNOWN_REGION, [0; 3]),
        Status::UnknownEndpoint => (ST_UNKNOWN_ENDPOINT, [0; 3]),
        Status::OutOfMemory { requested, free } => (ST_OUT_OF_MEMORY, [requested, free, 0]),
        Status::ZeroLength => (ST_ZERO_LENGTH, [0; 3]),
        Status::Skipped => (ST_SKIPPED, [0; 3]),
        Status::Malformed => (ST_MALFORMED, [0; 3]),
        Status::System => (ST_SYSTEM, [0; 3]),
    };
    put_u32(out, RESPONSE_HEAD as u32 + tail);
    out.push(code);
    put_u64(out, id);
    for v in values {
        put_u64(out, v);
    }
}

/// Decodes a response head (the bytes after the length prefix).
pub fn decode_response_head(body_len: u32, head: &[u8]) -> Result<ResponseHead, WireError> {
    if body_len > MAX_BODY {
        return Err(WireError::TooLarge(body_len));
    }
    let tail = body_len.checked_sub(RESPONSE_HEAD as u32).ok_or(WireError::Truncated("response head"))?;
    let mut c = Cursor { bytes: head };
    let code = c.u8("status")?;
    let id = c.u64("request id")?;
    let values = [c.u64("value")?, c.u64("value")?, c.u64("value")?];
    let status = match code {
        ST_OK => Status::Ok,
        ST_ACCESS_DENIED => Status::AccessDenied,
        ST_OUT_OF_BOUNDS => Status::OutOfBounds { offset: values[0], len: values[1], region_len: values[2] },
        ST_UNKNOWN_REGION => Status::UnknownRegion,
        ST_UNKNOWN_ENDPOINT => Status::UnknownEndpoint,
        ST_OUT_OF_MEMORY => Status::OutOfMemory { requested: values[0], free: values[1] },
        ST_ZERO_LENGTH => Status::ZeroLength,
        ST_SKIPPED => Status::Skipped,
        ST_MALFORMED => Status::Malformed,
        ST_SYSTEM => Status::System,
        code => return Err(WireError::UnknownCode { what: "status", code }),
    };
    Ok(ResponseHead { id, status, values, tail })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn frame(op: &Op, tail: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        encode_request_head(&mut out, 42, op, tail.len() as u32);
        out.extend_from_slice(tail);
        out
    }

    #[test]
    fn requests_round_trip() {
        let e = |i| Endpoint { invocation: InvocationId(9), component: ComputeId(i), instance: i };
        let ops = [
            (Op::Batch { count: 3 }, &b""[..]),
            (Op::Read { region: RegionId(1), key: AccessKey(2), offset: 3, len: 4 }, b""),
            (Op::Write { region: RegionId(1), key: AccessKey(2), offset: 3 }, b"data"),
            (Op::Allocate { bytes: 1 << 20 }, b""),
            (Op::Free { region: RegionId(5), key: AccessKey(6) }, b""),
            (Op::Send { from: e(1), to: e(2) }, b"hello"),
            (Op::Stats, b""),
        ];
        for (op, tail) in ops {
            let bytes = frame(&op, tail);
            let (head, got_tail) = decode_request(&bytes).expect("decodes");
            assert_eq!((head.id, &head.op, got_tail), (42, &op, tail));
        }
    }

    #[test]
    fn responses_round_trip() {
        for status in [
            Status::Ok,
            Status::OutOfBounds { offset: 1, len: 2, region_len: 3 },
            Status::OutOfMemory { requested: 7, free: 5 },
            Status::Skipped,
        ] {
            let mut out = Vec::new();
            encode_response_head(&mut out, 7, status, [1, 2, 3], 0);
            let len = u32::from_le_bytes([out[0], out[1], out[2], out[3]]);
            let head = decode_response_head(len, &out[4..]).expect("decodes");
            assert_eq!((head.id, head.status, head.tail), (7, status, 0));
        }
    }

    #[test]
    fn bad_frames_are_errors() {
        assert_eq!(decode_request(&[1, 0]), Err(WireError::Truncated("length prefix")));
        assert!(matches!(decode_request(&[1, 0, 0, 0, 99]), Err(WireError::UnknownCode { code: 99, .. })));
        let huge = (MAX_BODY + 1).to_le_bytes();
        assert_eq!(decode_request(&huge), Err(WireError::TooLarge(MAX_BODY + 1)));
        let mut read_with_tail = frame(&Op::Stats, b"");
        read_with_tail[0] += 1;
        read_with_tail.push(0);
        assert!(matches!(decode_request(&read_with_tail), Err(WireError::Inconsistent(_))));
        // Limits that keep a peer from making the server allocate or send without bound.
        let e = Endpoint { invocation: InvocationId(1), component: ComputeId(1), instance: 0 };
        let mut send = Vec::new();
        encode_request_head(&mut send, 1, &Op::Send { from: e.clone(), to: e }, MAX_MESSAGE + 1);
        let len = u32::from_le_bytes([send[0], send[1], send[2], send[3]]);
        assert!(matches!(decode_request_head(len, &send[4..]), Err(WireError::Inconsistent(_))));
        let huge_read = frame(&Op::Read { region: RegionId(1), key: AccessKey(1), offset: 0, len: u32::MAX }, b"");
        assert!(matches!(decode_request(&huge_read), Err(WireError::Inconsistent(_))));
    }

    proptest! {
        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = decode_request(&bytes);
            if bytes.len() >= 4 {
                let len = u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
                let _ = decode_response_head(len, &bytes[4..]);
                let _ = decode_request_head(len, &bytes[4..]);
            }
        }
    }
}
