//! The frames of two-sided messages over an RC queue pair (SEND/RECV).
//!
//! A message becomes one `First` frame (header and the first bytes) and as
//! many `More` frames as its length needs, each at most one receive buffer
//! long. An RC queue pair delivers frames in order and a sender posts all
//! frames of a message back to back (holding the send queue), so the
//! receiver reassembles one message at a time per queue pair. The receiver
//! answers each message with an `Ack` frame saying whether the destination
//! endpoint was open; the sender's `send` returns only then, which is how
//! `send` to an endpoint that is not open fails with `UnknownEndpoint`.
//!
//! All integers are little endian:
//!
//! ```text
//! First: 1u8 | seq u64 | total u64 | from (invocation u64, component u32, instance u32) | to (same) | bytes…
//! More:  2u8 | seq u64 | bytes…
//! Ack:   3u8 | seq u64 | status u8 (0 delivered, 1 unknown endpoint, 2 too large)
//! ```

use resc_core::ids::{ComputeId, Endpoint, InvocationId};

const FIRST: u8 = 1;
const MORE: u8 = 2;
const ACK: u8 = 3;

/// Header bytes of a `First` frame.
pub(super) const FIRST_HEADER: usize = 1 + 8 + 8 + 16 + 16;
/// Header bytes of a `More` frame.
pub(super) const MORE_HEADER: usize = 1 + 8;
/// The largest message a receiver reassembles.
pub(super) const MAX_MESSAGE: u64 = 1 << 30;

/// What the receiver says about a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum AckStatus {
    /// Put into the destination's mailbox.
    Delivered,
    /// The destination endpoint is not open there.
    UnknownEndpoint,
    /// Longer than [`MAX_MESSAGE`]; dropped.
    TooLarge,
}

fn put_endpoint(out: &mut Vec<u8>, e: &Endpoint) {
    out.extend_from_slice(&e.invocation.0.to_le_bytes());
    out.extend_from_slice(&e.component.0.to_le_bytes());
    out.extend_from_slice(&e.instance.to_le_bytes());
}

fn u64_at(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

fn endpoint_at(b: &[u8], at: usize) -> Option<Endpoint> {
    Some(Endpoint {
        invocation: InvocationId(u64_at(b, at)?),
        component: ComputeId(u32_at(b, at + 8)?),
        instance: u32_at(b, at + 12)?,
    })
}

/// Appends the frames of one message to `out`, calling `emit` with each
/// frame's bytes (`out` is cleared before each). `frame_bytes` is at least
/// [`FIRST_HEADER`] + 1.
pub(super) fn encode_message(
    seq: u64,
    from: &Endpoint,
    to: &Endpoint,
    payload: &[u8],
    frame_bytes: usize,
    out: &mut Vec<u8>,
    mut emit: impl FnMut(&[u8]) -> bool,
) -> bool {
    debug_assert!(frame_bytes > FIRST_HEADER);
    out.clear();
    out.push(FIRST);
    out.extend_from_slice(&seq.to_le_bytes());
    out.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    put_endpoint(out, from);
    put_endpoint(out, to);
    let first = payload.len().min(frame_bytes - FIRST_HEADER);
    out.extend_from_slice(&payload[..first]);
    if !emit(out) {
        return false;
    }
    for chunk in payload[first..].chunks(frame_bytes - MORE_HEADER) {
        out.clear();
        out.push(MORE);
        out.extend_from_slice(&seq.to_le_bytes());
        out.extend_from_slice(chunk);
        if !emit(out) {
            return false;
        }
    }
    true
}

/// The `Ack` frame of message `seq`.
pub(super) fn encode_ack(seq: u64, status: AckStatus) -> [u8; 10] {
    let mut frame = [0u8; 10];
    frame[0] = ACK;
    frame[1..9].copy_from_slice(&seq.to_le_bytes());
    frame[9] = match status {
        AckStatus::Delivered => 0,
        AckStatus::UnknownEndpoint => 1,
        AckStatus::TooLarge => 2,
    };
    frame
}

/// A message being reassembled.
#[derive(Debug)]
pub(super) struct Assembly {
    seq: u64,
    total: u64,
    from: Endpoint,
    to: Endpoint,
    /// `None` while a too-large message is being skipped.
    bytes: Option<Vec<u8>>,
    received: u64,
}

/// What one received frame completes.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Event {
    /// Part of a message; more frames follow.
    Partial,
    /// A whole message.
    Message { seq: u64, from: Endpoint, to: Endpoint, payload: Vec<u8> },
    /// A message too large to accept, now skipped entirely.
    Rejected { seq: u64 },
    /// The answer to one of our messages.
    Ack { seq: u64, status: AckStatus },
}

/// A frame that breaks the protocol; the queue pair is unusable.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Malformed(pub(super) &'static str);

/// Feeds one received frame into the queue pair's reassembly state.
pub(super) fn receive(state: &mut Option<Assembly>, frame: &[u8]) -> Result<Event, Malformed> {
    let seq = u64_at(frame, 1).ok_or(Malformed("a frame shorter than its header"))?;
    match frame[0] {
        ACK => {
            let status = match frame.get(9) {
                Some(0) => AckStatus::Delivered,
                Some(1) => AckStatus::UnknownEndpoint,
                Some(2) => AckStatus::TooLarge,
                _ => return Err(Malformed("an ack with an unknown status")),
            };
            Ok(Event::Ack { seq, status })
        }
        FIRST => {
            if state.is_some() {
                return Err(Malformed("a message began before the previous one ended"));
            }
            let total = u64_at(frame, 9).ok_or(Malformed("a short first frame"))?;
            let from = endpoint_at(frame, 17).ok_or(Malformed("a short first frame"))?;
            let to = endpoint_at(frame, 33).ok_or(Malformed("a short first frame"))?;
            let bytes = &frame[FIRST_HEADER..];
            let bytes = if total > MAX_MESSAGE {
                None
            } else {
                // Grow as bytes arrive beyond 16 MiB rather than trust the header.
                let mut buf = Vec::with_capacity(total.min(16 << 20) as usize);
                buf.extend_from_slice(bytes);
                Some(buf)
            };
            *state = Some(Assembly { seq, total, from, to, bytes, received: 0 });
            advance(state, (frame.len() - FIRST_HEADER) as u64)
        }
        MORE => {
            let assembly = state.as_mut().ok_or(Malformed("a continuation without a message"))?;
            if assembly.seq != seq {
                return Err(Malformed("a continuation of another message"));
            }
            if let Some(buf) = assembly.bytes.as_mut() {
                buf.extend_from_slice(&frame[MORE_HEADER..]);
            }
            advance(state, (frame.len() - MORE_HEADER) as u64)
        }
        _ => Err(Malformed("an unknown frame kind")),
    }
}

fn advance(state: &mut Option<Assembly>, n: u64) -> Result<Event, Malformed> {
    let Some(assembly) = state.as_mut() else { return Err(Malformed("no message")) };
    assembly.received += n;
    if assembly.received < assembly.total {
        return Ok(Event::Partial);
    }
    if assembly.received > assembly.total {
        return Err(Malformed("a message longer than it said"));
    }
    let Some(done) = state.take() else { return Err(Malformed("no message")) };
    Ok(match done.bytes {
        Some(payload) => Event::Message { seq: done.seq, from: done.from, to: done.to, payload },
        None => Event::Rejected { seq: done.seq },
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn endpoint(n: u32) -> Endpoint {
        Endpoint { invocation: InvocationId(u64::MAX - u64::from(n)), component: ComputeId(n), instance: n * 3 }
    }

    fn frames(seq: u64, payload: &[u8], frame_bytes: usize) -> Vec<Vec<u8>> {
        let mut frames = Vec::new();
        let mut out = Vec::new();
        assert!(encode_message(seq, &endpoint(1), &endpoint(2), payload, frame_bytes, &mut out, |f| {
            frames.push(f.to_vec());
            true
        }));
        frames
    }

    #[test]
    fn an_empty_message_is_one_frame() {
        let f = frames(5, &[], 64);
        assert_eq!(f.len(), 1);
        let mut state = None;
        assert_eq!(
            receive(&mut state, &f[0]),
            Ok(Event::Message { seq: 5, from: endpoint(1), to: endpoint(2), payload: vec![] })
        );
    }

    #[test]
    fn acks_round_trip() {
        for status in [AckStatus::Delivered, AckStatus::UnknownEndpoint, AckStatus::TooLarge] {
            assert_eq!(receive(&mut None, &encode_ack(9, status)), Ok(Event::Ack { seq: 9, status }));
        }
    }

    #[test]
    fn protocol_breaches_are_malformed() {
        let f = frames(1, &[7; 200], 64);
        assert!(receive(&mut None, &f[1]).is_err(), "a continuation without a first frame");
        let mut state = None;
        assert_eq!(receive(&mut state, &f[0]), Ok(Event::Partial));
        assert!(receive(&mut state, &frames(2, &[1; 200], 64)[0]).is_err(), "a message inside another");
        assert!(receive(&mut None, &[9, 0, 0, 0, 0, 0, 0, 0, 0]).is_err());
        assert!(receive(&mut None, &[1, 0]).is_err());
    }

    #[test]
    fn an_oversized_message_is_skipped_then_rejected() {
        let mut first = frames(3, &[1; 10], 64).remove(0);
        first[9..17].copy_from_slice(&(MAX_MESSAGE + 1).to_le_bytes());
        let mut state = None;
        assert_eq!(receive(&mut state, &first), Ok(Event::Partial));
        let mut remaining = MAX_MESSAGE + 1 - 10;
        let chunk = vec![0u8; 1 << 20];
        let mut more = vec![MORE];
        more.extend_from_slice(&3u64.to_le_bytes());
        more.extend_from_slice(&chunk);
        let mut last = Ok(Event::Partial);
        while remaining >= chunk.len() as u64 {
            last = receive(&mut state, &more);
            remaining -= chunk.len() as u64;
        }
        assert_eq!(last, Ok(Event::Partial));
        let mut tail = vec![MORE];
        tail.extend_from_slice(&3u64.to_le_bytes());
        tail.extend(std::iter::repeat_n(0u8, remaining as usize));
        assert_eq!(receive(&mut state, &tail), Ok(Event::Rejected { seq: 3 }));
    }

    proptest! {
        #[test]
        fn messages_reassemble(
            payload in proptest::collection::vec(any::<u8>(), 0..3000),
            frame_bytes in (FIRST_HEADER + 1)..400,
            seq: u64,
        ) {
            let f = frames(seq, &payload, frame_bytes);
            prop_assert!(f.iter().all(|f| f.len() <= frame_bytes));
            let mut state = None;
            for (i, frame) in f.iter().enumerate() {
                let event = receive(&mut state, frame).unwrap();
                if i + 1 < f.len() {
                    prop_assert_eq!(event, Event::Partial);
                } else {
                    let whole = Event::Message { seq, from: endpoint(1), to: endpoint(2), payload: payload.clone() };
                    prop_assert_eq!(event, whole);
                }
            }
            prop_assert!(state.is_none());
        }
    }
}
