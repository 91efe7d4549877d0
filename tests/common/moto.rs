//! moto's server (PyPI `moto[server]`, which no one here wrote) as a CloudWatch on a free port
//! of 127.0.0.1, started by the test and stopped when dropped. `scripts/test.sh` installs it and
//! names its server in `KPL_MOTO_SERVER`. Included next to `mod common;`.
#![allow(dead_code)] // each test binary uses its own subset

use std::process::Command;
use std::time::Duration;

use super::{Service, free_port};

pub struct Moto {
    _server: Service,
    pub endpoint: String,
}

impl Moto {
    /// Starts it and waits (at most 30 s) until it listens.
    pub async fn start() -> Moto {
        let server = std::env::var("KPL_MOTO_SERVER").expect(
            "this test needs moto's server (PyPI moto[server]): run scripts/test.sh, which \
             installs it, or set KPL_MOTO_SERVER to a moto_server executable",
        );
        let port = free_port();
        let mut command = Command::new(server);
        command.args(["-H", "127.0.0.1", "-p", &port.to_string()]);
        let moto = Moto {
            _server: Service::start(command, "moto_server starts"),
            endpoint: format!("http://127.0.0.1:{port}"),
        };
        // Bounded: moto answers within a few seconds of starting.
        for _ in 0..300 {
            if tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
            {
                return moto;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!(
            "moto_server did not listen on {} within 30 s",
            moto.endpoint
        );
    }
}
