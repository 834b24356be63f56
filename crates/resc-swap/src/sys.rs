//! Every system call of the crate, behind small types: the reserved mapping
//! ([`Mapping`]), the userfaultfd ([`Userfault`]), the eventfd that wakes the
//! handler ([`Doorbell`]) and `poll`.
//!
//! The two operations that change what a program reads from the region —
//! filling missing pages ([`Userfault::copy`]) and dropping pages
//! ([`Mapping::discard`]) — are `unsafe fn`s: they are sound only when the
//! pager's protocol preserves every byte a program can observe (see
//! `pager.rs`).

use crate::error::SwapError;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::ptr::NonNull;
use userfaultfd::{
    Event, EventBuffer, FaultKind, FeatureFlags, IoctlFlags, ReadWrite, RegisterMode, Uffd, UffdBuilder,
};

/// The system's page size (4096 when it cannot be read).
pub(crate) fn page_size() -> usize {
    // SAFETY: sysconf reads a system constant; it has no preconditions.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    usize::try_from(size).ok().filter(|s| s.is_power_of_two()).unwrap_or(4096)
}

/// A reserved range of anonymous virtual memory, unmapped on drop.
///
/// It is mapped `PROT_READ | PROT_WRITE`, `MAP_PRIVATE | MAP_ANONYMOUS |
/// MAP_NORESERVE`, with `MADV_DONTFORK` (a child process does not inherit it)
/// and `MADV_NOHUGEPAGE` (faults are served page by page).
#[derive(Debug)]
pub(crate) struct Mapping {
    base: NonNull<u8>,
    len: usize,
}

// SAFETY: a `Mapping` owns its range and only hands out its address; who may
// read or write the memory is decided by the types built on it.
unsafe impl Send for Mapping {}
// SAFETY: as above; `&Mapping` allows no access to the bytes by itself.
unsafe impl Sync for Mapping {}

impl Mapping {
    /// Reserves `len` bytes (a multiple of the page size).
    pub(crate) fn reserve(len: usize) -> io::Result<Mapping> {
        // SAFETY: a new anonymous private mapping at an address the kernel
        // picks: it overlaps nothing this process uses.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let Some(base) = NonNull::new(ptr.cast::<u8>()) else {
            return Err(io::Error::other("mmap returned address 0"));
        };
        let mapping = Mapping { base, len };
        mapping.advise(libc::MADV_DONTFORK)?;
        // Without transparent huge pages configured the kernel says EINVAL:
        // then there is nothing to turn off.
        match mapping.advise(libc::MADV_NOHUGEPAGE) {
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {}
            other => other?,
        }
        Ok(mapping)
    }

    fn advise(&self, advice: libc::c_int) -> io::Result<()> {
        // SAFETY: the range is this mapping; DONTFORK and NOHUGEPAGE change
        // how the kernel manages it, not its contents.
        let rc = unsafe { libc::madvise(self.base.as_ptr().cast(), self.len, advice) };
        if rc == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }

    /// The first byte.
    pub(crate) fn base(&self) -> *mut u8 {
        self.base.as_ptr()
    }

    /// The length in bytes.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// The address of byte `offset` (`offset` ≤ `len`).
    pub(crate) fn at(&self, offset: usize) -> *mut u8 {
        assert!(offset <= self.len, "offset {offset} past a mapping of {} bytes", self.len);
        self.base.as_ptr().wrapping_add(offset)
    }

    /// The bytes of `[offset, offset + len)`, for the transport to read
    /// during a write-back.
    ///
    /// # Safety
    ///
    /// The range lies in the mapping, its pages are present and
    /// write-protected (no thread can write them while the slice lives), and
    /// the slice is dropped before the pages are.
    pub(crate) unsafe fn bytes(&self, offset: usize, len: usize) -> &[u8] {
        assert!(offset.checked_add(len).is_some_and(|end| end <= self.len));
        // SAFETY: in bounds (checked above) of a live mapping; present and
        // not written while the slice lives (the caller's contract).
        unsafe { std::slice::from_raw_parts(self.at(offset), len) }
    }

    /// Drops the pages of `[offset, offset + len)` (`MADV_DONTNEED`): the
    /// next access faults as missing.
    ///
    /// # Safety
    ///
    /// The range lies in the mapping, and the bytes dropped are either saved
    /// elsewhere (swap space) or no longer observable by anyone (freed
    /// memory): the pager's protocol.
    pub(crate) unsafe fn discard(&self, offset: usize, len: usize) -> io::Result<()> {
        assert!(offset.checked_add(len).is_some_and(|end| end <= self.len));
        // SAFETY: the range is inside this mapping (checked above); the caller
        // guarantees no observable byte is lost.
        let rc = unsafe { libc::madvise(self.at(offset).cast(), len, libc::MADV_DONTNEED) };
        if rc == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: the range is this mapping, reserved in `reserve`, and no
        // reference into it outlives the `Mapping` (the types built on it
        // hold it until every borrow has ended).
        unsafe { libc::munmap(self.base.as_ptr().cast(), self.len) };
    }
}

/// A page fault reported by the userfaultfd.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Fault {
    /// The faulting address.
    pub(crate) addr: usize,
    /// A write access.
    pub(crate) write: bool,
    /// A write on a write-protected page (otherwise: a missing page).
    pub(crate) write_protect: bool,
}

/// Why a `UFFDIO_COPY` did not fill the whole range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CopyError {
    /// A page of the range is already present (`EEXIST`).
    Exists,
    /// Any other error number.
    Os(i32),
}

/// A userfaultfd with one region registered for missing and write-protect
/// faults.
#[derive(Debug)]
pub(crate) struct Userfault {
    uffd: Uffd,
    /// Whether faults from kernel code (a system call writing into the
    /// region) reach the handler too. When false they fail with `EFAULT`.
    kernel_faults: bool,
}

impl Userfault {
    /// Opens a non-blocking userfaultfd with write-protect faults.
    /// Kernel-mode faults are handled where the system lets us (root, or
    /// access to `/dev/userfaultfd`), else only user-mode ones.
    pub(crate) fn open() -> Result<Userfault, SwapError> {
        let build = |user_mode_only: bool| {
            UffdBuilder::new()
                .close_on_exec(true)
                .non_blocking(true)
                .user_mode_only(user_mode_only)
                .require_features(FeatureFlags::PAGEFAULT_FLAG_WP)
                .require_ioctls(IoctlFlags::API | IoctlFlags::REGISTER | IoctlFlags::UNREGISTER)
                .create()
        };
        match build(false) {
            Ok(uffd) => Ok(Userfault { uffd, kernel_faults: true }),
            Err(first) => match build(true) {
                Ok(uffd) => Ok(Userfault { uffd, kernel_faults: false }),
                Err(_) => Err(classify_open_error(&first)),
            },
        }
    }

    /// Whether kernel-mode faults are handled (see the field).
    pub(crate) fn kernel_faults(&self) -> bool {
        self.kernel_faults
    }

    /// Registers the whole mapping for missing and write-protect faults.
    pub(crate) fn register(&self, mapping: &Mapping) -> Result<(), SwapError> {
        let ioctls = self
            .uffd
            .register_with_mode(
                mapping.base().cast(),
                mapping.len(),
                RegisterMode::MISSING | RegisterMode::WRITE_PROTECT,
            )
            .map_err(|e| SwapError::UnsupportedKernel {
                feature: "userfaultfd registration for missing and write-protect faults",
                reason: e.to_string(),
            })?;
        let needed = IoctlFlags::COPY | IoctlFlags::WAKE | IoctlFlags::WRITE_PROTECT;
        if !ioctls.contains(needed) {
            return Err(SwapError::UnsupportedKernel {
                feature: "UFFDIO_COPY, UFFDIO_WAKE and UFFDIO_WRITEPROTECT on anonymous memory",
                reason: format!("the range offers {ioctls:?}"),
            });
        }
        Ok(())
    }

    /// Fills the missing pages at `dst` with `src` (`UFFDIO_COPY`),
    /// write-protected when `write_protect`, waking the threads waiting on
    /// the range when `wake`. Returns the bytes copied.
    ///
    /// # Safety
    ///
    /// `dst .. dst + src.len()` lies in a mapping registered with this
    /// userfaultfd, page-aligned, and `src` holds the bytes a program must
    /// read there (what was last written, or zeros): the pager's protocol.
    pub(crate) unsafe fn copy(
        &self,
        dst: *mut u8,
        src: &[u8],
        write_protect: bool,
        wake: bool,
    ) -> Result<usize, CopyError> {
        let mut mode = 0;
        if write_protect {
            mode |= userfaultfd_sys::UFFDIO_COPY_MODE_WP;
        }
        if !wake {
            mode |= userfaultfd_sys::UFFDIO_COPY_MODE_DONTWAKE;
        }
        let mut arg = userfaultfd_sys::uffdio_copy {
            dst: dst as u64,
            src: src.as_ptr() as u64,
            len: src.len() as u64,
            mode,
            copy: 0,
        };
        // SAFETY: UFFDIO_COPY reads `src.len()` bytes at `src` (a live
        // slice) and fills missing pages of the registered range at `dst`
        // (the caller's contract); `arg` is a valid uffdio_copy that the
        // kernel writes the result into.
        let rc = unsafe { libc::ioctl(self.uffd.as_raw_fd(), userfaultfd_sys::UFFDIO_COPY as libc::c_ulong, &mut arg) };
        if rc == 0 {
            return Ok(arg.copy.max(0) as usize);
        }
        let errno = io::Error::last_os_error().raw_os_error().unwrap_or(libc::EIO);
        match errno {
            libc::EEXIST => Err(CopyError::Exists),
            // Partly done: the kernel reports how much in `copy`.
            libc::EAGAIN if arg.copy > 0 => Ok(arg.copy as usize),
            other => Err(CopyError::Os(other)),
        }
    }

    /// Write-protects `[addr, addr + len)` (present pages only); writers block
    /// in a write-protect fault until it is lifted. Does not wake anyone.
    pub(crate) fn write_protect(&self, addr: *mut u8, len: usize) -> io::Result<()> {
        self.uffd.write_protect(addr.cast(), len).map_err(io::Error::other)
    }

    /// Lifts write protection from `[addr, addr + len)`, waking the writers
    /// blocked there when `wake`.
    pub(crate) fn unprotect(&self, addr: *mut u8, len: usize, wake: bool) -> io::Result<()> {
        self.uffd.remove_write_protection(addr.cast(), len, wake).map_err(io::Error::other)
    }

    /// Wakes the threads waiting on faults in `[addr, addr + len)`.
    pub(crate) fn wake(&self, addr: *mut u8, len: usize) -> io::Result<()> {
        self.uffd.wake(addr.cast(), len).map_err(io::Error::other)
    }

    /// Reads the pending page faults without blocking into `out` (cleared
    /// first). Events other than page faults are not enabled, so none come.
    pub(crate) fn read_faults(&self, buffer: &mut EventBuffer, out: &mut Vec<Fault>) -> io::Result<()> {
        out.clear();
        let events = self.uffd.read_events(buffer).map_err(io::Error::other)?;
        for event in events {
            if let Event::Pagefault { kind, rw, addr, .. } = event.map_err(io::Error::other)? {
                out.push(Fault {
                    addr: addr as usize,
                    write: rw == ReadWrite::Write,
                    write_protect: kind == FaultKind::WriteProtected,
                });
            }
        }
        Ok(())
    }

    /// The descriptor, for `poll`.
    pub(crate) fn fd(&self) -> RawFd {
        self.uffd.as_raw_fd()
    }
}

fn classify_open_error(error: &userfaultfd::Error) -> SwapError {
    let unsupported =
        || SwapError::UnsupportedKernel { feature: "userfaultfd write-protect faults", reason: error.to_string() };
    match error {
        userfaultfd::Error::UnsupportedIoctls(_) => unsupported(),
        // nix's Errno is a fieldless `repr(i32)` enum of error numbers.
        userfaultfd::Error::SystemError(errno) if *errno as i32 == libc::EINVAL => unsupported(),
        userfaultfd::Error::OpenDevUserfaultfd(io) => {
            SwapError::UserfaultfdUnavailable { reason: format!("/dev/userfaultfd: {io}") }
        }
        other => SwapError::UserfaultfdUnavailable { reason: format!("{other} ({other:?})") },
    }
}

/// Sets the nice value of the calling thread (Linux: per thread).
pub(crate) fn set_thread_nice(nice: i32) -> io::Result<()> {
    // SAFETY: gettid and setpriority have no memory-safety preconditions.
    let rc = unsafe {
        let tid = libc::gettid();
        libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, nice)
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// An eventfd that wakes the handler out of `poll`.
#[derive(Debug)]
pub(crate) struct Doorbell {
    fd: OwnedFd,
}

impl Doorbell {
    /// A fresh, non-blocking eventfd.
    pub(crate) fn new() -> io::Result<Doorbell> {
        // SAFETY: eventfd has no memory-safety preconditions.
        let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` is a new descriptor that nothing else owns.
        Ok(Doorbell { fd: unsafe { OwnedFd::from_raw_fd(fd) } })
    }

    /// Rings: the next or current `poll` returns.
    pub(crate) fn ring(&self) {
        let one: u64 = 1;
        // SAFETY: writes the 8 bytes of `one`, a live local, to our eventfd.
        // A full counter (EAGAIN) still leaves the eventfd readable: ignored.
        unsafe { libc::write(self.fd.as_raw_fd(), (&one as *const u64).cast(), 8) };
    }

    /// Resets the counter.
    pub(crate) fn drain(&self) {
        let mut value: u64 = 0;
        // SAFETY: reads at most 8 bytes into `value`, a live local.
        unsafe { libc::read(self.fd.as_raw_fd(), (&mut value as *mut u64).cast(), 8) };
    }

    /// The descriptor, for `poll`.
    pub(crate) fn fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

/// Waits until `a` or `b` is readable, at most `timeout` (`None`: forever).
pub(crate) fn poll_two(a: RawFd, b: RawFd, timeout: Option<std::time::Duration>) -> io::Result<()> {
    let mut fds = [
        libc::pollfd { fd: a, events: libc::POLLIN, revents: 0 },
        libc::pollfd { fd: b, events: libc::POLLIN, revents: 0 },
    ];
    let spec = timeout.map(|t| libc::timespec {
        tv_sec: t.as_secs().min(i64::MAX as u64) as libc::time_t,
        tv_nsec: libc::c_long::from(t.subsec_nanos() as i32),
    });
    let spec_ptr = spec.as_ref().map_or(std::ptr::null(), |s| s as *const libc::timespec);
    // SAFETY: `fds` is a live array of two pollfd structures; `spec_ptr` is
    // null or points to a live timespec; no signal mask is passed.
    let rc = unsafe { libc::ppoll(fds.as_mut_ptr(), 2, spec_ptr, std::ptr::null()) };
    if rc < 0 {
        let error = io::Error::last_os_error();
        if error.kind() == io::ErrorKind::Interrupted {
            return Ok(());
        }
        return Err(error);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_errors_become_typed_swap_errors() {
        let denied = userfaultfd::Error::OpenDevUserfaultfd(io::Error::from_raw_os_error(libc::EACCES));
        assert!(matches!(classify_open_error(&denied), SwapError::UserfaultfdUnavailable { .. }));
        let old_kernel = userfaultfd::Error::UnsupportedIoctls(IoctlFlags::empty());
        assert!(matches!(classify_open_error(&old_kernel), SwapError::UnsupportedKernel { .. }));
        let other = userfaultfd::Error::ReadEof;
        assert!(matches!(classify_open_error(&other), SwapError::UserfaultfdUnavailable { .. }));
    }

    #[test]
    fn a_reserved_range_is_zeroed_and_not_inherited() {
        let mapping = Mapping::reserve(1 << 20).expect("mmap");
        assert_eq!(mapping.len(), 1 << 20);
        assert_eq!(mapping.base() as usize % page_size(), 0);
        // SAFETY: the range is ours and nothing is registered on it yet:
        // reading it faults in zero pages.
        let bytes = unsafe { mapping.bytes(4096, 64) };
        assert!(bytes.iter().all(|&b| b == 0));
    }
}
