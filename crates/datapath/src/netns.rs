//! Named network namespaces, made and removed the way `ip netns add` and
//! `ip netns del` do (a bind mount of the namespace on /run/netns/NAME), so
//! `ip netns`, `nsenter --net` and CNI runtimes see Twill's namespaces
//! like their own, but without a subprocess.

use std::{
    ffi::CString,
    fs::File,
    io,
    os::{
        fd::{AsRawFd, FromRawFd},
        unix::{ffi::OsStrExt, fs::DirBuilderExt, fs::OpenOptionsExt},
    },
    path::{Path, PathBuf},
    sync::Mutex,
};

use crate::{netdev_error::NetdevError, netlink::Rtnl};

pub(crate) const NETNS_RUN_DIR: &str = "/run/netns";

/// A namespace just made: a handle on it (to move devices in) and a
/// netlink socket opened inside it (to configure them there).
pub(crate) struct NewNetns {
    pub(crate) file: File,
    pub(crate) rtnl: Rtnl,
}

/// Serialises the set-up of /run/netns within this process, so two
/// creates at once do not both bind-mount it onto itself.
static RUN_DIR: Mutex<()> = Mutex::new(());

pub(crate) fn path(name: &str) -> PathBuf {
    Path::new(NETNS_RUN_DIR).join(name)
}

fn cstring(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes()).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))
}

fn check(result: libc::c_int) -> io::Result<()> {
    if result == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

fn mount(source: Option<&Path>, target: &Path, flags: libc::c_ulong) -> io::Result<()> {
    let source = source.map(cstring).transpose()?;
    let target = cstring(target)?;
    // SAFETY: every pointer is a valid C string or null, as mount(2) allows
    // for the source of a propagation change.
    check(unsafe {
        libc::mount(
            source.as_ref().map_or(std::ptr::null(), |s| s.as_ptr()),
            target.as_ptr(),
            c"none".as_ptr(),
            flags,
            std::ptr::null(),
        )
    })
}

fn unmount(target: &Path) -> io::Result<()> {
    let target = cstring(target)?;
    // SAFETY: a valid C string.
    check(unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH) })
}

/// Makes /run/netns a shared mount point, as iproute2 does: a namespace
/// mounted there later then also shows in mount namespaces copied from
/// this one (`ip netns exec`, containers) instead of only in this one.
fn prepare_run_dir() -> io::Result<()> {
    let _guard = RUN_DIR.lock().unwrap_or_else(|e| e.into_inner());
    let dir = Path::new(NETNS_RUN_DIR);
    match std::fs::DirBuilder::new().mode(0o755).create(dir) {
        Err(e) if e.kind() != io::ErrorKind::AlreadyExists => return Err(e),
        _ => {}
    }
    match mount(None, dir, libc::MS_SHARED | libc::MS_REC) {
        // Not a mount point yet: make it one, then share it.
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
            mount(Some(dir), dir, libc::MS_BIND | libc::MS_REC)?;
            mount(None, dir, libc::MS_SHARED | libc::MS_REC)
        }
        other => other,
    }
}

fn valid_name(name: &str) -> bool {
    !name.is_empty() && name != "." && name != ".." && !name.contains('/') && !name.contains('\0')
}

/// Creates the namespace `name` and keeps it alive with a bind mount on
/// /run/netns/NAME. An existing name is an error, as with `ip netns add`.
pub(crate) fn create(name: &str) -> Result<NewNetns, NetdevError> {
    if !valid_name(name) {
        return Err(NetdevError::InvalidNetnsName(name.into()));
    }
    let fail = |step: &'static str| move |source| NetdevError::Netns { name: name.into(), step, source };
    prepare_run_dir().map_err(fail("preparing /run/netns"))?;
    let target = path(name);
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o000)
        .open(&target)
        .map_err(fail("creating its mount point"))?;
    // unshare(2) moves only the calling thread, so a thread that exits
    // right after does it: no other code ever runs in the wrong
    // namespace, and the socket it opens stays in the new one.
    let thread_target = target.clone();
    let made = std::thread::Builder::new()
        .name("twill-netns".into())
        .spawn(move || -> Result<NewNetns, (&'static str, io::Error)> {
            // SAFETY: unshare(2) with a flag, for this thread only.
            check(unsafe { libc::unshare(libc::CLONE_NEWNET) }).map_err(|e| ("unshare", e))?;
            mount(Some(Path::new("/proc/thread-self/ns/net")), &thread_target, libc::MS_BIND)
                .map_err(|e| ("bind-mounting it", e))?;
            let file = File::open(&thread_target).map_err(|e| ("opening it", e))?;
            let rtnl = Rtnl::open().map_err(|e| ("opening a netlink socket in it", e))?;
            Ok(NewNetns { file, rtnl })
        })
        .map_err(fail("starting a thread for it"))?
        .join()
        .unwrap_or_else(|_| Err(("thread", io::Error::other("namespace thread panicked"))));
    made.map_err(|(step, source)| {
        let _ = unmount(&target);
        let _ = std::fs::remove_file(&target);
        NetdevError::Netns { name: name.into(), step, source }
    })
}

/// Removes the namespace's name; the namespace itself goes when nothing
/// else holds it. Idempotent.
pub(crate) fn delete(name: &str) -> Result<(), NetdevError> {
    if !valid_name(name) {
        return Err(NetdevError::InvalidNetnsName(name.into()));
    }
    let target = path(name);
    // Not mounted (a leftover of an interrupted create, or a file whose
    // mount lives in another mount namespace): removing it is enough.
    let _ = unmount(&target);
    match std::fs::remove_file(&target) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => {
            Err(NetdevError::Netns { name: name.into(), step: "removing its mount point", source: e })
        }
        _ => Ok(()),
    }
}

/// A namespace someone else made (a container runtime's CNI_NETNS, given
/// by path): a handle on it and a netlink socket opened inside it.
pub(crate) fn open(path: &Path) -> Result<NewNetns, NetdevError> {
    let name = path.display().to_string();
    let fail = |step: &'static str| {
        let name = name.clone();
        move |source| NetdevError::Netns { name, step, source }
    };
    let file = File::open(path).map_err(fail("opening it"))?;
    let fd = file.as_raw_fd();
    // setns(2) moves only the calling thread: a thread that exits right
    // after opens the socket there, and nothing else runs inside.
    let rtnl = std::thread::Builder::new()
        .name("twill-netns".into())
        .spawn(move || -> Result<Rtnl, (&'static str, io::Error)> {
            // SAFETY: setns(2) on an open namespace file, for this thread only.
            check(unsafe { libc::setns(fd, libc::CLONE_NEWNET) }).map_err(|e| ("entering it", e))?;
            Rtnl::open().map_err(|e| ("opening a netlink socket in it", e))
        })
        .map_err(fail("starting a thread for it"))?
        .join()
        .unwrap_or_else(|_| Err(("thread", io::Error::other("namespace thread panicked"))))
        .map_err(|(step, source)| NetdevError::Netns { name: name.clone(), step, source })?;
    Ok(NewNetns { file, rtnl })
}

/// SO_NETNS_COOKIE (linux/asm-generic/socket.h; not in the libc crate).
const SO_NETNS_COOKIE: libc::c_int = 71;

/// The cookie of the network namespace a socket lives in: the number
/// `bpf_get_netns_cookie()` returns for it in the socket hooks.
fn socket_netns_cookie() -> io::Result<u64> {
    // SAFETY: a plain socket(2); the descriptor is owned right away.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a new descriptor nobody else owns.
    let socket = unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) };
    let mut cookie: u64 = 0;
    let mut len = std::mem::size_of::<u64>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into `cookie`.
    check(unsafe {
        libc::getsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            SO_NETNS_COOKIE,
            (&mut cookie as *mut u64).cast(),
            &mut len,
        )
    })?;
    Ok(cookie)
}

/// The cookie of the caller's network namespace.
pub fn current_netns_cookie() -> io::Result<u64> {
    socket_netns_cookie()
}

/// The cookie of the network namespace at `netns_path` (/run/netns/NAME,
/// /proc/PID/ns/net, a CNI_NETNS), for `twill_lb_netns`. The socket is
/// opened on a short-lived thread that entered the namespace: setns(2)
/// moves only the calling thread.
pub fn netns_cookie(netns_path: &Path) -> io::Result<u64> {
    let file = File::open(netns_path)?;
    std::thread::scope(|s| {
        s.spawn(|| {
            // SAFETY: setns(2) on an open namespace file, for this thread only.
            check(unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) })?;
            socket_netns_cookie()
        })
        .join()
        .unwrap_or_else(|_| Err(io::Error::other("namespace thread panicked")))
    })
}
