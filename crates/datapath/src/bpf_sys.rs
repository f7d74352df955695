//! The few bpf(2) commands aya 0.14 does not expose: getting a pinned link
//! back, swapping the program in a link, asking a cgroup link which cgroup
//! it is on, and creating a map Twill writes through mmap (a Maglev table).
//! Each is one syscall with a `#[repr(C)]` prefix of `union bpf_attr`.

use std::{
    ffi::CString,
    io,
    os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd},
    path::Path,
};

const BPF_MAP_CREATE: libc::c_long = 0;
const BPF_OBJ_GET: libc::c_long = 7;
const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;
const BPF_LINK_UPDATE: libc::c_long = 29;

pub(crate) const BPF_MAP_TYPE_ARRAY: u32 = 2;
pub(crate) const BPF_F_MMAPABLE: u32 = 1 << 10;
pub(crate) const BPF_F_INNER_MAP: u32 = 1 << 12;
const BPF_LINK_TYPE_CGROUP: u32 = 3;

/// bpf(2) with `attr` (a prefix of union bpf_attr the kernel accepts for
/// `cmd`; the kernel checks that bytes it does not know are zero).
fn bpf<T>(cmd: libc::c_long, attr: &mut T) -> io::Result<libc::c_long> {
    // SAFETY: attr is a valid, initialised repr(C) struct of the given size
    // that outlives the call.
    let ret = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr as *mut T, std::mem::size_of::<T>() as u32) };
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

fn owned(fd: libc::c_long) -> OwnedFd {
    // SAFETY: the kernel just returned this new descriptor to us.
    unsafe { OwnedFd::from_raw_fd(fd as i32) }
}

/// A pinned object (here: a link) by its bpffs path.
pub(crate) fn obj_get(path: &Path) -> io::Result<OwnedFd> {
    #[repr(C)]
    struct Attr {
        pathname: u64,
        bpf_fd: u32,
        file_flags: u32,
    }
    let c_path = CString::new(path.as_os_str().as_encoded_bytes())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    let mut attr = Attr { pathname: c_path.as_ptr() as u64, bpf_fd: 0, file_flags: 0 };
    bpf(BPF_OBJ_GET, &mut attr).map(owned)
}

/// Replaces the program of `link` with `program`, atomically: the hook
/// runs the old program or the new one, never none.
pub(crate) fn link_update(link: BorrowedFd<'_>, program: BorrowedFd<'_>) -> io::Result<()> {
    #[repr(C)]
    struct Attr {
        link_fd: u32,
        new_prog_fd: u32,
        flags: u32,
        old_prog_fd: u32,
    }
    let mut attr = Attr {
        link_fd: link.as_raw_fd() as u32,
        new_prog_fd: program.as_raw_fd() as u32,
        flags: 0,
        old_prog_fd: 0,
    };
    bpf(BPF_LINK_UPDATE, &mut attr).map(drop)
}

/// The cgroup id a cgroup link is attached to (None for other links).
pub(crate) fn link_cgroup_id(link: BorrowedFd<'_>) -> io::Result<Option<u64>> {
    #[repr(C)]
    struct Attr {
        bpf_fd: u32,
        info_len: u32,
        info: u64,
    }
    // struct bpf_link_info: type, id, prog_id, then a union at offset 16
    // whose cgroup member starts with the cgroup id. The rest stays zero.
    let mut info = [0u64; 16];
    let mut attr = Attr {
        bpf_fd: link.as_raw_fd() as u32,
        info_len: std::mem::size_of_val(&info) as u32,
        info: info.as_mut_ptr() as u64,
    };
    bpf(BPF_OBJ_GET_INFO_BY_FD, &mut attr)?;
    let link_type = info[0] as u32;
    Ok((link_type == BPF_LINK_TYPE_CGROUP).then_some(info[2]))
}

/// A new array map of u32 values that user space can mmap.
pub(crate) fn create_mmapable_u32_array(
    name: &str,
    max_entries: u32,
    extra_flags: u32,
) -> io::Result<OwnedFd> {
    #[repr(C)]
    struct Attr {
        map_type: u32,
        key_size: u32,
        value_size: u32,
        max_entries: u32,
        map_flags: u32,
        inner_map_fd: u32,
        numa_node: u32,
        map_name: [u8; 16],
    }
    let mut map_name = [0u8; 16];
    for (dst, src) in map_name.iter_mut().zip(name.bytes().take(15)) {
        *dst = src;
    }
    let mut attr = Attr {
        map_type: BPF_MAP_TYPE_ARRAY,
        key_size: 4,
        value_size: 4,
        max_entries,
        map_flags: BPF_F_MMAPABLE | extra_flags,
        inner_map_fd: 0,
        numa_node: 0,
        map_name,
    };
    bpf(BPF_MAP_CREATE, &mut attr).map(owned)
}

/// An mmap of a BPF_F_MMAPABLE array of u32 values. Array maps store each
/// value in an 8-byte slot, so entry `i` is the u32 at byte `8 * i`.
pub(crate) struct MappedU32Array {
    ptr: *mut u8,
    len: usize,
    entries: usize,
}

/// Bytes per value in an array map's memory (values rounded up to 8).
const ARRAY_STRIDE: usize = 8;

impl MappedU32Array {
    pub(crate) fn map(fd: impl AsFd, entries: usize, writable: bool) -> io::Result<Self> {
        // SAFETY: sysconf has no preconditions.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as usize;
        let len = (entries * ARRAY_STRIDE).div_ceil(page).max(1) * page;
        let prot = if writable { libc::PROT_READ | libc::PROT_WRITE } else { libc::PROT_READ };
        // SAFETY: a fresh shared mapping of the map's memory; the kernel
        // checks the length against the map.
        let ptr = unsafe {
            libc::mmap(std::ptr::null_mut(), len, prot, libc::MAP_SHARED, fd.as_fd().as_raw_fd(), 0)
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(Self { ptr: ptr.cast(), len, entries })
    }

    /// Writes `values` from entry 0 (the mapping must be writable).
    pub(crate) fn write(&mut self, values: &[u32]) {
        assert!(values.len() <= self.entries, "{} values for {} entries", values.len(), self.entries);
        for (i, v) in values.iter().enumerate() {
            // SAFETY: i < entries, so the slot lies inside the mapping; the
            // slot is 8-byte aligned.
            unsafe { self.ptr.add(i * ARRAY_STRIDE).cast::<u32>().write(*v) };
        }
    }

    pub(crate) fn read(&self) -> Vec<u32> {
        (0..self.entries)
            // SAFETY: as in write.
            .map(|i| unsafe { self.ptr.add(i * ARRAY_STRIDE).cast::<u32>().read_volatile() })
            .collect()
    }
}

impl Drop for MappedU32Array {
    fn drop(&mut self) {
        // SAFETY: the mapping made in map(), unmapped once.
        unsafe { libc::munmap(self.ptr.cast(), self.len) };
    }
}
