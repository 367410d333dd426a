//! Thin, checked wrappers over the few raw syscalls socket2 does not cover.
//!
//! Each wrapper turns a `-1` return into `io::Error::last_os_error()` and takes fds as `BorrowedFd`, so
//! callers stay in safe code. Not on the hot path except [`retry_if_interrupted`].
#![allow(unsafe_code)]

use std::io;

use std::os::fd::{AsRawFd, BorrowedFd};

/// Runs a syscall closure until it returns anything but `EINTR` (signal(7): "interrupted by a signal
/// handler"); SIGUSR1 and SIGTERM must not surface as errors.
pub(crate) fn retry_if_interrupted<T>(mut f: impl FnMut() -> io::Result<T>) -> io::Result<T> {
    loop {
        match f() {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            other => return other,
        }
    }
}

/// The abstract-namespace name prefix of this process's Unix target sockets,
/// `\0udptee-target-PID-` (each socket adds a number). A datagram that reaches udptee's own Unix
/// listener from such a name is a loop: one of its targets is (by now) a link to the listener.
pub(crate) fn own_unix_prefix() -> &'static [u8] {
    static PREFIX: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    PREFIX.get_or_init(|| format!("\0udptee-target-{}-", std::process::id()).into_bytes())
}

/// `setsockopt(fd, level, name, &value, sizeof(int))`.
pub(crate) fn setsockopt_int(
    fd: BorrowedFd<'_>,
    level: libc::c_int,
    name: libc::c_int,
    value: libc::c_int,
) -> io::Result<()> {
    // SAFETY: `fd` is a live descriptor for the borrow; we pass a pointer to a local c_int and its exact size.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            name,
            (&raw const value).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// `SK_MEMINFO_DROPS` in include/uapi/linux/sock_diag.h: the socket's cumulative drop count.
const SK_MEMINFO_DROPS: usize = 8;

/// The socket's kernel drop counter (`SO_MEMINFO`, available since Linux 4.6): datagrams the kernel
/// dropped on this socket since it was created, mostly because its receive buffer was full.
pub(crate) fn socket_drops(fd: BorrowedFd<'_>) -> io::Result<u64> {
    let mut info = [0u32; 16];
    let mut len = size_of_val(&info) as libc::socklen_t;
    // SAFETY: `info` is a writable local of `len` bytes; the kernel writes at most `len` bytes and
    // updates `len` to what it wrote.
    let rc = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_MEMINFO,
            info.as_mut_ptr().cast(),
            &raw mut len,
        )
    };
    if rc == -1 {
        return Err(io::Error::last_os_error());
    }
    if (len as usize) < (SK_MEMINFO_DROPS + 1) * size_of::<u32>() {
        return Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "SO_MEMINFO without a drop count (kernel < 4.6)",
        ));
    }
    Ok(u64::from(info[SK_MEMINFO_DROPS]))
}

/// The calling thread's kernel id, for reading its CPU time from /proc/self/task.
pub(crate) fn gettid() -> i32 {
    // SAFETY: gettid(2) takes no arguments and cannot fail.
    unsafe { libc::gettid() }
}

/// Bytes of data the peer of a TCP socket has acknowledged so far (`tcpi_bytes_acked` of
/// `TCP_INFO`, Linux 4.1+; the FIN counts one when it is acknowledged). Still readable after the
/// connection was reset, when `SIOCOUTQ` already reads 0 (the kernel purged the queue).
pub(crate) fn tcp_bytes_acked(fd: BorrowedFd<'_>) -> io::Result<u64> {
    // SAFETY: tcp_info is plain integers, so all-zero is a valid value.
    let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
    let mut len = size_of::<libc::tcp_info>() as libc::socklen_t;
    // SAFETY: `info` is a writable local of `len` bytes; the kernel writes at most `len` bytes and
    // updates `len` to what it wrote.
    let rc = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            (&raw mut info).cast(),
            &raw mut len,
        )
    };
    if rc == -1 {
        return Err(io::Error::last_os_error());
    }
    let end = std::mem::offset_of!(libc::tcp_info, tcpi_bytes_acked) + size_of::<u64>();
    if (len as usize) < end {
        return Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "TCP_INFO without tcpi_bytes_acked (kernel < 4.1)",
        ));
    }
    Ok(info.tcpi_bytes_acked)
}

/// Bytes a socket has sent and its peer not yet taken (`SIOCOUTQ`; for a Unix stream socket,
/// what the reader has not read, counted with the kernel's per-buffer overhead).
pub(crate) fn outq_bytes(fd: BorrowedFd<'_>) -> io::Result<usize> {
    let mut n: libc::c_int = 0;
    // SAFETY: `fd` is a live descriptor for the borrow; SIOCOUTQ (TIOCOUTQ) writes one c_int to
    // the pointer we pass, a local of that type.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCOUTQ, &raw mut n) };
    if rc == -1 {
        return Err(io::Error::last_os_error());
    }
    Ok(usize::try_from(n).unwrap_or(0))
}
