//! Memory comes back after a burst: glibc keeps the pages of freed large buffers (a 2 MB
//! request body, a transfer's chunks) in its arenas; after such a request the daemon hands
//! the free ones back to the kernel.

/// A request or response at least this large is followed by [`give_back`].
pub(crate) const LARGE_BODY: usize = 1024 * 1024;

/// Returns the allocator's free pages to the kernel (glibc's `malloc_trim`, every arena).
/// Costs well under a millisecond on a daemon's heap; a no-op elsewhere.
pub(crate) fn give_back() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim has no preconditions; it only releases free memory.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn memory_freed_before_a_trim_can_be_allocated_again() {
        let big = vec![7u8; 8 << 20];
        drop(big);
        super::give_back();
        let again = vec![9u8; 8 << 20];
        assert!(again.iter().all(|b| *b == 9));
    }
}
