//! Terminal queries.

use std::os::fd::{AsFd, AsRawFd};

/// The width in columns of the terminal behind `fd`, or `None` when `fd` is not a terminal
/// (or the query fails).
pub fn terminal_columns(fd: impl AsFd) -> Option<u16> {
    let mut size = libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ writes one `winsize` into the valid, exclusively borrowed `size`;
    // the fd is borrowed for the duration of the call.
    let rc = unsafe { libc::ioctl(fd.as_fd().as_raw_fd(), libc::TIOCGWINSZ, &mut size) };
    (rc == 0).then_some(size.ws_col)
}
