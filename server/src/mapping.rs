//! Anonymous memory mappings ([`Mapping`]): for one large frame being received, the
//! frame's declared length, of which only the pages written are ever backed
//! ([`Mapping::new`]); for the receive ring's provided buffers, memory faulted in at once
//! ([`Mapping::populated`], `uring`).
//!
//! Why not the allocator: a frame larger than a pooled receive buffer used to grow its
//! buffer as its bytes came (a quarter at a time). Each step reallocated and copied what
//! was held and zeroed the new part, below glibc's mmap threshold in a heap that the
//! buffers of 5,000 such peers fragmented. Under issue 9's partial frames that growth was
//! 45 % of the shard's CPU (34 % page faults), and the `malloc_trim` after each cut of the
//! memory budget, which returns such freed heap pages, took 3-5 ms while well-behaved peers
//! waited (results/large-frame-mapping/). With the mapping it took 0.03-1.5 ms
//! (results/unmap-in-turn/).
//!
//! A mapping of the declared length is address space, not memory: the kernel backs a page
//! when it is first written, here by the `recv` that brings its bytes, so nothing is
//! copied, zeroed or reallocated as the frame arrives, and the memory held is the pages
//! written, which is what the pool counts (`inbound::RxPool`). Unmapping gives it all back
//! to the system, with no allocator in between; the pool unmaps what it is given back in
//! the passes after, a share at a time (`RxPool::unmap_retired`): the kernel frees each
//! page, about 55 µs for a half-written 1 MiB frame, and a budget cut gives back a hundred
//! of them at once.
//!
//! `MAP_NORESERVE`: no swap is reserved for the length, which is address space only. Under
//! strict overcommit (`vm.overcommit_memory = 2`) the kernel ignores that flag and charges
//! the whole length to its commit limit, and may refuse the mapping; the buffer then grows
//! on the heap as it did before (`inbound::RxPool::grow`).

use std::io;
use std::ops::{Deref, DerefMut};
use std::ptr::NonNull;
use std::sync::OnceLock;

/// A private anonymous mapping, read and written as a byte slice; unmapped on drop. It
/// remembers how far it was written ([`Mapping::written`]): the memory it holds. 16 bytes,
/// so that a connection's receive buffer is no larger for it (lengths in 32 bits: a frame's
/// length is).
pub(crate) struct Mapping {
    ptr: NonNull<u8>,
    len: u32,
    /// Bytes of whole pages written so far.
    backed: u32,
}

impl Mapping {
    /// At least `len` bytes of address space (whole pages); `None` if the kernel refuses,
    /// or past 4 GiB.
    pub fn new(len: usize) -> Option<Mapping> {
        Mapping::map(len, libc::MAP_NORESERVE).ok()
    }

    /// `len` bytes (whole pages) faulted in now, so that the memory they cost shows at
    /// start and not as connections come: counted as written.
    pub fn populated(len: usize) -> io::Result<Mapping> {
        let mut m = Mapping::map(len, libc::MAP_POPULATE)?;
        m.backed = m.len;
        Ok(m)
    }

    fn map(len: usize, flags: libc::c_int) -> io::Result<Mapping> {
        let len = whole_pages(len.max(1));
        let len32 = u32::try_from(len)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "mapping past 4 GiB"))?;
        // SAFETY: a new private anonymous mapping at an address the kernel picks; it
        // touches no existing memory.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | flags,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(Mapping {
            ptr: NonNull::new(p.cast()).expect("mmap never returns null on success"),
            len: len32,
            backed: 0,
        })
    }

    /// Its first byte, for the kernel (io_uring's provided buffers).
    pub fn as_ptr(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    /// Bytes up to `end` have been written: returns how many bytes of pages that backs
    /// beyond what earlier writes did (the memory it newly holds).
    pub fn written(&mut self, end: usize) -> usize {
        let now = u32::try_from(whole_pages(end)).map_or(self.len, |n| n.min(self.len));
        let more = now.saturating_sub(self.backed);
        self.backed = self.backed.max(now);
        more as usize
    }

    /// Bytes of pages written: the memory it holds.
    pub fn backed(&self) -> usize {
        self.backed as usize
    }
}

impl Deref for Mapping {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        // SAFETY: `len` bytes mapped readable and writable for as long as `self` lives,
        // reachable only through it; pages never written read as zeros.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len as usize) }
    }
}

impl DerefMut for Mapping {
    fn deref_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in `deref`, and `&mut self` makes this the only reference.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len as usize) }
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `new`, unmapped once; no slice of it outlives `self`.
        unsafe {
            libc::munmap(self.ptr.as_ptr().cast(), self.len as usize);
        }
    }
}

/// `n` rounded up to whole pages: the memory `n` bytes written from a page boundary take.
pub(crate) fn whole_pages(n: usize) -> usize {
    static PAGE: OnceLock<usize> = OnceLock::new();
    let page = *PAGE.get_or_init(|| {
        // SAFETY: sysconf only reads a system constant.
        let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
        usize::try_from(p).ok().filter(|&p| p > 0).unwrap_or(4096)
    });
    n.div_ceil(page) * page
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mapping_is_whole_pages_of_zeros_to_write() {
        let mut m = Mapping::new(10_000).expect("mmap");
        assert_eq!(m.len() % whole_pages(1), 0);
        assert!(m.len() >= 10_000);
        assert!(m.iter().all(|&b| b == 0));
        assert_eq!(m.backed(), 0);
        m[9_999] = 7;
        assert_eq!(m[9_999], 7);
        let page = whole_pages(1);
        assert_eq!(m.written(1), page);
        assert_eq!(m.written(page), 0);
        assert_eq!(m.written(page + 1), page);
        // Moved down (a later frame's bytes to the front): no new pages.
        assert_eq!(m.written(10), 0);
        assert_eq!(m.written(2 * m.len()), m.len() - 2 * page);
        assert_eq!(m.backed(), m.len());
        assert_eq!(whole_pages(0), 0);
        assert_eq!(whole_pages(1), whole_pages(whole_pages(1)));
    }
}
