//! How the agent stops: on a signal (leaving the datapath running for the
//! next agent) or after `twill uninstall`. Whoever decides sends a
//! [`Shutdown`]; only `run`'s caller ends the process.

use std::sync::mpsc;

/// Why the agent stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shutdown {
    /// SIGTERM or SIGINT: leave the datapath running for the next agent.
    Signal(i32),
    /// `twill uninstall` finished: everything is already removed.
    Uninstalled,
}

/// Blocks SIGTERM and SIGINT in every thread (call it before any thread
/// exists) and waits for them in one, which reports to `shutdown`.
pub fn spawn_signal_thread(shutdown: mpsc::Sender<Shutdown>) -> anyhow::Result<()> {
    // SAFETY: plain sigset manipulation; the mask is inherited by every
    // thread spawned after this.
    let set = unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        set
    };
    std::thread::Builder::new().name("signals".into()).spawn(move || {
        let mut signal = 0;
        // SAFETY: sigwait on the set blocked above.
        unsafe { libc::sigwait(&set, &mut signal) };
        let _ = shutdown.send(Shutdown::Signal(signal));
    })?;
    Ok(())
}
