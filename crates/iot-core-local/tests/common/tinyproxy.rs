//! A real HTTP proxy for the tests: tinyproxy, started on a free loopback port with a generated
//! configuration, its log read back to prove which tunnels it opened.
//!
//! tinyproxy must be installed (`apt-get install tinyproxy`; `.ci/run` installs it): without it
//! the proxy tests fail, saying so, rather than pass without having run.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How the proxy is configured.
#[derive(Default)]
pub struct TinyproxyOptions {
    /// `BasicAuth user password`: the proxy then answers 407 without them.
    pub basic_auth: Option<(&'static str, &'static str)>,
    /// `ConnectPort` lines: CONNECT to any other port is refused (403). Empty: every port.
    pub connect_ports: Vec<u16>,
}

/// A running tinyproxy; stopped when dropped.
pub struct Tinyproxy {
    child: Child,
    pub port: u16,
    log: PathBuf,
}

/// Where tinyproxy is: on PATH, or in the Debian package's /usr/bin or /usr/sbin.
fn tinyproxy_binary() -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/bin"), PathBuf::from("/usr/sbin")])
        .map(|dir| dir.join("tinyproxy"))
        .find(|candidate| candidate.is_file())
        .unwrap_or_else(|| {
            panic!(
                "tinyproxy is not installed, and the proxy tests need a real proxy: install it \
                 with `sudo apt-get install tinyproxy` (Debian, Ubuntu) or `brew install \
                 tinyproxy` (macOS); .ci/run installs it"
            )
        })
}

impl Tinyproxy {
    /// Start tinyproxy on a free loopback port, its files in `dir`, and wait until it listens.
    pub fn start(dir: &Path, opts: &TinyproxyOptions) -> Tinyproxy {
        let binary = tinyproxy_binary();
        std::fs::create_dir_all(dir).unwrap();
        let port = {
            let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            probe.local_addr().unwrap().port()
        };
        let log = dir.join("tinyproxy.log");
        let _ = std::fs::remove_file(&log);
        let mut config = format!(
            "Port {port}\nListen 127.0.0.1\nTimeout 30\nLogFile \"{}\"\nLogLevel Connect\n\
             MaxClients 20\nAllow 127.0.0.1\n",
            log.display()
        );
        if let Some((user, password)) = opts.basic_auth {
            config.push_str(&format!("BasicAuth {user} {password}\n"));
        }
        for p in &opts.connect_ports {
            config.push_str(&format!("ConnectPort {p}\n"));
        }
        let config_file = dir.join("tinyproxy.conf");
        std::fs::write(&config_file, config).unwrap();
        let child = Command::new(&binary)
            .arg("-d")
            .arg("-c")
            .arg(&config_file)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", binary.display()));
        let mut proxy = Tinyproxy { child, port, log };
        proxy.wait_until_listening();
        proxy
    }

    fn wait_until_listening(&mut self) {
        let give_up = Instant::now() + Duration::from_secs(10);
        loop {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "tinyproxy exited ({status}) before listening: {}",
                    self.log()
                );
            }
            assert!(
                Instant::now() < give_up,
                "tinyproxy did not listen on {} within 10s: {}",
                self.port,
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Everything tinyproxy has logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// How many CONNECT requests for `target` (`host:port`) the proxy has received.
    pub fn connects_to(&self, target: &str) -> usize {
        let line = format!("): CONNECT {target} HTTP/1.1");
        self.log().lines().filter(|l| l.ends_with(&line)).count()
    }

    /// How many CONNECT requests of any kind the proxy has received.
    pub fn connects(&self) -> usize {
        self.log()
            .lines()
            .filter(|l| l.contains("): CONNECT "))
            .count()
    }

    /// How many tunnels the proxy has opened to the endpoint (`localhost`).
    pub fn tunnels(&self) -> usize {
        self.log()
            .lines()
            .filter(|l| l.contains("Established connection to host \"localhost\""))
            .count()
    }
}

impl Drop for Tinyproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
