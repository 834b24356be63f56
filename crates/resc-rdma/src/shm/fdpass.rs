//! Frames over a Unix stream socket, with a descriptor passed alongside
//! (`SCM_RIGHTS`).
#![allow(unsafe_code)]

use super::control::{self, PREFIX};
use nix::errno::Errno;
use nix::libc;
use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags, UnixAddr};
use std::io::{self, IoSlice};
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
    let mut filled = 0;
    while filled < buf.len() {
        let (bytes, truncated) = match recv_some(stream, &mut buf[filled..], fds) {
            Ok(received) => received,
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(timeout_or(e)),
        };
        if truncated {
            // The descriptors that did arrive are in `fds` already, owned:
            // they close when the caller drops them on this error.
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "the peer attached more descriptors than a frame carries",
            ));
        }
        if bytes == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        filled += bytes;
    }
    Ok(())
}

/// Room for the control messages of one `recvmsg`, aligned for `cmsghdr`.
#[repr(C, align(8))]
struct ControlSpace([u8; 256]);

/// One `recvmsg` into `buf`: how many bytes came, and whether the kernel cut
/// the control data short (`MSG_CTRUNC`). Every descriptor the kernel
/// installed in this process — all of them, whatever else went wrong — is
/// appended to `fds` (close-on-exec), so none can leak.
fn recv_some(stream: &UnixStream, buf: &mut [u8], fds: &mut Vec<OwnedFd>) -> Result<(usize, bool), Errno> {
    // At most `MAX_FDS` descriptors fit; the kernel closes any beyond them.
    // SAFETY: `CMSG_SPACE` only computes a size.
    let space = unsafe { libc::CMSG_SPACE((MAX_FDS * std::mem::size_of::<RawFd>()) as u32) } as usize;
    let mut control = ControlSpace([0; 256]);
    assert!(space <= control.0.len(), "control space for {MAX_FDS} descriptors");
    let mut iov = libc::iovec { iov_base: buf.as_mut_ptr().cast(), iov_len: buf.len() };
    // SAFETY: all-zero is a valid `msghdr` (null pointers, zero lengths).
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.0.as_mut_ptr().cast();
    msg.msg_controllen = space as _;
    // SAFETY: `msg` points at `iov` (which describes `buf`, writable for
    // `buf.len()` bytes) and at `space <= 256` bytes of `control`, all alive
    // and exclusively borrowed for the call.
    let received = unsafe { libc::recvmsg(stream.as_raw_fd(), &mut msg, libc::MSG_CMSG_CLOEXEC) };
    let failed = (received < 0).then(Errno::last);
    // Whatever the outcome, adopt what the kernel installed. On failure the
    // kernel installs nothing; reset the length so no stale bytes are parsed.
    if failed.is_some() {
        msg.msg_controllen = 0;
    }
    // SAFETY: `msg.msg_control` points at `control`, and the kernel has set
    // `msg_controllen` to the bytes of control messages it wrote there
    // (at most `space`); `CMSG_FIRSTHDR`/`CMSG_NXTHDR` stay within that
    // length, and each header's `cmsg_len` covers its data.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
        while !cmsg.is_null() {
            let header = std::ptr::read_unaligned(cmsg);
            if header.cmsg_level == libc::SOL_SOCKET && header.cmsg_type == libc::SCM_RIGHTS {
                let data = libc::CMSG_DATA(cmsg);
                let data_len = (header.cmsg_len as usize).saturating_sub(data.offset_from(cmsg.cast::<u8>()) as usize);
                for i in 0..data_len / std::mem::size_of::<RawFd>() {
                    let raw = std::ptr::read_unaligned(data.add(i * std::mem::size_of::<RawFd>()).cast::<RawFd>());
                    // With `SCM_RIGHTS` the kernel has just installed `raw`
                    // in this process's descriptor table for this message;
                    // nothing else in the process knows it, so taking
                    // ownership (and closing it on drop) is sound.
                    if raw >= 0 {
                        fds.push(OwnedFd::from_raw_fd(raw));
                    }
                }
            }
            cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
        }
    }
    if let Some(e) = failed {
        return Err(e);
    }
    Ok((received as usize, msg.msg_flags & libc::MSG_CTRUNC != 0))
}

/// A socket timeout (`SO_RCVTIMEO`/`SO_SNDTIMEO`) is `TimedOut`.
fn timeout_or(e: Errno) -> io::Error {
    if e == Errno::EAGAIN {
        io::Error::new(io::ErrorKind::TimedOut, "the peer did not answer in time")
    } else {
        e.into()
    }
}
