use std::{ffi::CString, io, path::Path};

const BPF_FS_MAGIC: i64 = 0xcafe4a11;

fn is_bpffs(path: &Path) -> bool {
    let Ok(c_path) = CString::new(path.as_os_str().as_encoded_bytes()) else { return false };
    // SAFETY: statfs into a zeroed struct we own.
    let mut stat: libc::statfs = unsafe { std::mem::zeroed() };
    unsafe { libc::statfs(c_path.as_ptr(), &mut stat) == 0 && stat.f_type as i64 == BPF_FS_MAGIC }
}

/// Makes sure `/sys/fs/bpf` is a bpffs (fresh machines do not mount it)
/// and that `root` exists on it.
pub fn ensure_bpffs(root: &Path) -> io::Result<()> {
    let mount_point = Path::new("/sys/fs/bpf");
    if !is_bpffs(mount_point) {
        std::fs::create_dir_all(mount_point)?;
        let source = CString::new("bpf").unwrap();
        let target = CString::new("/sys/fs/bpf").unwrap();
        // SAFETY: plain mount(2) with valid C strings.
        let rc =
            unsafe { libc::mount(source.as_ptr(), target.as_ptr(), source.as_ptr(), 0, std::ptr::null()) };
        if rc != 0 {
            return Err(io::Error::other(format!(
                "mounting bpffs on /sys/fs/bpf: {}",
                io::Error::last_os_error()
            )));
        }
    }
    std::fs::create_dir_all(root)?;
    if !is_bpffs(root) {
        return Err(io::Error::other(format!("{} is not on a bpf filesystem", root.display())));
    }
    Ok(())
}
