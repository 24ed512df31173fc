//! What the delivery tests share: whether a real tool they run is present,
//! and a free port for it.

#![allow(dead_code)]

use std::net::{SocketAddr, TcpListener, UdpSocket};

/// Whether the tool `what` is usable (`present`). Absent on a developer's
/// machine: the test says so and is skipped. Absent on CI (`CI=true`): the
/// test fails, since CI installs it (scripts/test).
pub(crate) fn tool_available(what: &str, present: bool) -> bool {
    if present {
        return true;
    }
    if std::env::var("CI").is_ok_and(|ci| ci == "true") {
        panic!("{what} is missing, and CI=true: scripts/test installs it");
    }
    eprintln!("SKIP: {what} is not installed here; this test needs it (CI installs it)");
    false
}

/// Whether `/usr/bin/python3` has aiosmtpd.
pub(crate) fn aiosmtpd_present() -> bool {
    std::process::Command::new("/usr/bin/python3")
        .args(["-c", "import aiosmtpd"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}

/// A loopback port free for both TCP and UDP at the moment of asking.
pub(crate) fn free_port() -> u16 {
    loop {
        let tcp = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = tcp.local_addr().unwrap().port();
        if UdpSocket::bind(SocketAddr::from(([127, 0, 0, 1], port))).is_ok() {
            return port;
        }
    }
}
