//! `twill endpoint exec`: run a command in an endpoint's network namespace,
//! as `ip netns exec` does, but finding the namespace the way the agent
//! sees it.
//!
//! An agent started with `ip netns exec NODE twill-agent` has a private
//! mount namespace: its bind mounts under /run/netns exist only there, and
//! ours is at best the empty file they sit on. The agent's view is reached
//! through /proc/PID/root, with PID the peer of a connection to its API
//! socket.

use std::{
    fs::File,
    io,
    os::{fd::AsRawFd, unix::net::UnixStream, unix::process::CommandExt},
    path::{Path, PathBuf},
    process::Command,
};

/// The pid of the process listening on the agent's API socket.
fn agent_pid(socket: &Path) -> io::Result<libc::pid_t> {
    let stream = UnixStream::connect(socket)?;
    let mut cred = libc::ucred { pid: 0, uid: 0, gid: 0 };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into `cred`.
    let rc = unsafe {
        libc::getsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut cred as *mut libc::ucred).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(cred.pid)
}

fn check(rc: libc::c_int) -> io::Result<()> {
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Joins the namespace at `path`; fails on anything that is not one (the
/// bare mount point of a namespace mounted elsewhere gives EINVAL).
fn enter(path: &Path) -> io::Result<()> {
    let file = File::open(path)?;
    // SAFETY: setns on an open file; this process is about to exec.
    check(unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) })
}

/// What `ip netns exec` does after setns: a mount namespace of our own
/// (slave, so nothing leaks back) with a sysfs of the new network
/// namespace, so /sys/class/net shows the endpoint's devices.
fn remount_sysfs() -> io::Result<()> {
    let none = c"none";
    let root = c"/";
    let sys = c"/sys";
    // SAFETY: unshare and mount with valid C strings and null data.
    unsafe {
        check(libc::unshare(libc::CLONE_NEWNS))?;
        check(libc::mount(
            none.as_ptr(),
            root.as_ptr(),
            none.as_ptr(),
            libc::MS_SLAVE | libc::MS_REC,
            std::ptr::null(),
        ))?;
        // No sysfs mounted is fine: one is mounted below either way.
        let _ = libc::umount2(sys.as_ptr(), libc::MNT_DETACH);
        let sysfs = c"sysfs";
        check(libc::mount(sysfs.as_ptr(), sys.as_ptr(), sysfs.as_ptr(), 0, std::ptr::null()))
    }
}

/// Enters `netns` and execs `command`; returns only on failure.
pub fn exec_in(socket: &Path, netns: &str, command: &[String]) -> anyhow::Error {
    let mut candidates: Vec<PathBuf> = Vec::new();
    let mut tried = Vec::new();
    match agent_pid(socket) {
        Ok(pid) => candidates.push(PathBuf::from(format!("/proc/{pid}/root/run/netns/{netns}"))),
        Err(e) => tried.push(format!("the agent's pid from {}: {e}", socket.display())),
    }
    candidates.push(Path::new("/run/netns").join(netns));
    let entered = candidates.iter().any(|path| match enter(path) {
        Ok(()) => true,
        Err(e) => {
            tried.push(format!("{}: {e}", path.display()));
            false
        }
    });
    if !entered {
        return anyhow::anyhow!("cannot enter network namespace {netns} ({})", tried.join("; "));
    }
    if let Err(e) = remount_sysfs() {
        return anyhow::anyhow!("mounting a sysfs for network namespace {netns}: {e}");
    }
    // exec replaces this process: stdin, stdout, stderr and the exit
    // status are the command's own.
    let err = Command::new(&command[0]).args(&command[1..]).exec();
    anyhow::anyhow!("running {:?} in {netns}: {err}", command.join(" "))
}
