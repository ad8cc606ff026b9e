//! `connect`'s stdin and stdout. ssh hands a ProxyCommand two pipes; pipes
//! are read and written through tokio's reactor, where tokio's own
//! stdin/stdout would hand every read and write to a blocking thread (a
//! thread started for the first, then a hand-off per chunk: latency on every
//! keystroke and on the first byte). Anything else (a terminal, a file, a
//! socket) takes tokio's way. Non-blocking mode, which the reactor needs, is
//! taken off the pipes again when the [`Restore`] guard is dropped, so
//! whoever shares a pipe after us finds it as it was.

use std::io;
use std::os::fd::{AsFd, BorrowedFd};

use nix::fcntl::{FcntlArg, OFlag, fcntl};
use nix::sys::stat::{SFlag, fstat};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::unix::pipe;

pub type Input = Box<dyn AsyncRead + Unpin + Send>;
pub type Output = Box<dyn AsyncWrite + Unpin + Send>;

/// Switches stdin and stdout back to blocking mode when dropped, where
/// [`open`] switched them.
pub struct Restore {
    stdin: bool,
    stdout: bool,
}

/// The process's stdin and stdout, made async.
pub fn open() -> io::Result<(Input, Output, Restore)> {
    let stdin = io::stdin();
    let restore_stdin = blocking_fifo(stdin.as_fd());
    let input: Input = if restore_stdin {
        let fd = stdin.as_fd().try_clone_to_owned()?;
        Box::new(pipe::Receiver::from_owned_fd(fd)?)
    } else {
        Box::new(tokio::io::stdin())
    };
    let stdout = io::stdout();
    let restore_stdout = blocking_fifo(stdout.as_fd());
    let output: Output = if restore_stdout {
        let fd = stdout.as_fd().try_clone_to_owned()?;
        Box::new(pipe::Sender::from_owned_fd(fd)?)
    } else {
        Box::new(tokio::io::stdout())
    };
    let restore = Restore {
        stdin: restore_stdin,
        stdout: restore_stdout,
    };
    Ok((input, output, restore))
}

/// Whether `fd` is a pipe in blocking mode (one already non-blocking was set
/// so by someone else, who may rely on it: left to tokio's way).
fn blocking_fifo(fd: BorrowedFd<'_>) -> bool {
    let fifo = fstat(fd)
        .is_ok_and(|st| SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFIFO);
    let blocking = fcntl(fd, FcntlArg::F_GETFL)
        .is_ok_and(|flags| !OFlag::from_bits_truncate(flags).contains(OFlag::O_NONBLOCK));
    fifo && blocking
}

fn make_blocking(fd: BorrowedFd<'_>) {
    if let Ok(flags) = fcntl(fd, FcntlArg::F_GETFL) {
        let flags = OFlag::from_bits_truncate(flags) - OFlag::O_NONBLOCK;
        let _ = fcntl(fd, FcntlArg::F_SETFL(flags));
    }
}

impl Drop for Restore {
    fn drop(&mut self) {
        if self.stdin {
            make_blocking(io::stdin().as_fd());
        }
        if self.stdout {
            make_blocking(io::stdout().as_fd());
        }
    }
}
