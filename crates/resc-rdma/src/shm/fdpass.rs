//! Frames over a Unix stream socket, with a descriptor passed alongside
//! (`SCM_RIGHTS`).
#![allow(unsafe_code)]

use super::control::{self, PREFIX};
use nix::errno::Errno;
use nix::sys::socket::{recvmsg, sendmsg, ControlMessage, ControlMessageOwned, MsgFlags, UnixAddr};
use std::io::{self, IoSlice, IoSliceMut};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;

/// How many descriptors one frame may carry before the rest are refused.
const MAX_FDS: usize = 4;

/// Sends `frame` whole, with `fd` attached to its first byte. Never raises
/// `SIGPIPE`: a peer that went away is an error.
pub(crate) fn send_frame(stream: &UnixStream, frame: &[u8], fd: Option<BorrowedFd<'_>>) -> io::Result<()> {
    let raw: Vec<RawFd> = fd.iter().map(AsRawFd::as_raw_fd).collect();
    let rights = [ControlMessage::ScmRights(&raw)];
    let mut sent = 0;
    while sent < frame.len() {
        // The descriptor goes with the first bytes that leave, only.
        let cmsgs: &[ControlMessage<'_>] = if sent == 0 && !raw.is_empty() { &rights } else { &[] };
        let iov = [IoSlice::new(&frame[sent..])];
        match sendmsg::<UnixAddr>(stream.as_raw_fd(), &iov, cmsgs, MsgFlags::MSG_NOSIGNAL, None) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => sent += n,
            Err(Errno::EINTR) => {}
            Err(e) => return Err(timeout_or(e)),
        }
    }
    Ok(())
}

/// Receives one frame's body; descriptors that came with it are appended to
/// `fds` (close-on-exec).
pub(crate) fn recv_frame(stream: &UnixStream, fds: &mut Vec<OwnedFd>) -> io::Result<Vec<u8>> {
    let mut prefix = [0u8; PREFIX];
    recv_exact(stream, &mut prefix, fds)?;
    let len = control::body_len(prefix).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
    let mut body = vec![0u8; len];
    recv_exact(stream, &mut body, fds)?;
    Ok(body)
}

fn recv_exact(stream: &UnixStream, buf: &mut [u8], fds: &mut Vec<OwnedFd>) -> io::Result<()> {
    let mut space = nix::cmsg_space!([RawFd; MAX_FDS]);
    let mut filled = 0;
    while filled < buf.len() {
        let mut iov = [IoSliceMut::new(&mut buf[filled..])];
        let message = match recvmsg::<()>(stream.as_raw_fd(), &mut iov, Some(&mut space), MsgFlags::MSG_CMSG_CLOEXEC) {
            Ok(message) => message,
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(timeout_or(e)),
        };
        let cmsgs = message.cmsgs().map_err(|_| {
            io::Error::new(io::ErrorKind::InvalidData, "the peer attached more descriptors than a frame carries")
        })?;
        for cmsg in cmsgs {
            if let ControlMessageOwned::ScmRights(received) = cmsg {
                for raw in received {
                    // SAFETY: with `SCM_RIGHTS` the kernel has just installed
                    // `raw` in this process's descriptor table for this
                    // message; nothing else in the process knows it, so taking
                    // ownership (and closing it on drop) is sound.
                    fds.push(unsafe { OwnedFd::from_raw_fd(raw) });
                }
            }
        }
        if message.bytes == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        filled += message.bytes;
    }
    Ok(())
}

/// A socket timeout (`SO_RCVTIMEO`/`SO_SNDTIMEO`) is `TimedOut`.
fn timeout_or(e: Errno) -> io::Error {
    if e == Errno::EAGAIN {
        io::Error::new(io::ErrorKind::TimedOut, "the peer did not answer in time")
    } else {
        e.into()
    }
}
