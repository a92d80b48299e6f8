"""The extractor of environment variable names (envvars.py), on small crates written here."""

import tempfile
import unittest
from pathlib import Path

import envvars

SHARED_CONFIG = r'''
pub struct ServerConfig;
impl ServerConfig {
    pub fn from_env(env: &Env, port: u16) -> Result<Self, ConfigError> {
        let _ = env.socket_addr("LISTEN_ADDR", default(port))?;
        let _ = env.duration("SHUTDOWN_GRACE_PERIOD", Duration::from_secs(10))?;
        let _ = env.duration("SHUTDOWN_DELAY", Duration::ZERO)?;
        Ok(Self)
    }
}
impl<K: Into<String>, V: Into<String>> FromIterator<(K, V)> for Env {
    fn from_iter<I>(iter: I) -> Self { let _ = env.get("NOT_FROM_A_CALLED_FUNCTION"); todo!() }
}
pub fn layered(env: &Env) -> Result<(), ConfigError> {
    ServerConfig::from_env(env, 1)?;
    let _ = env.upstream("SHARED_UPSTREAM_ADDR", "http://127.0.0.1:1")?;
    Ok(())
}
#[cfg(test)]
mod tests {
    fn t() { let _ = e.upstream("TEST_ONLY", "http://x:1"); }
}
'''

TELEMETRY = r'''
const FORMAT_VAR: &str = "LOG_FORMAT";
pub fn init(service: &str, env: &Env) -> Result<Telemetry, ConfigError> {
    // env.get("IN_A_COMMENT") is not a read
    let _ = env.parse_with(FORMAT_VAR, Text, "text or json", parse)?;
    let _ = env.get("RUST_LOG").unwrap_or("info { not a brace");
    Ok(Telemetry)
}
'''


class ExtractorTest(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        root = Path(self.tmp.name)
        self.shared = root / "shared" / "src"
        self.shared.mkdir(parents=True)
        (self.shared / "config.rs").write_text(SHARED_CONFIG)
        (self.shared / "telemetry.rs").write_text(TELEMETRY)
        self.service = root / "services" / "demo" / "src"
        self.service.mkdir(parents=True)
        envvars.shared_functions.cache_clear()
        envvars.service_env.cache_clear()

    def tearDown(self):
        self.tmp.cleanup()

    def write(self, name: str, text: str) -> None:
        (self.service / name).write_text(text)

    def env(self) -> envvars.ServiceEnv:
        return envvars.service_env(self.service, self.shared)

    def test_literals_and_consts_of_the_service_and_the_shared_functions_it_calls(self):
        self.write("main.rs", 'fn main() { let t = shared::telemetry::init(NAME, &env)?; }')
        self.write("config.rs", r'''
            pub const PORT: u16 = 50099;
            pub const ADMIN_PORT: u16 = 9199;
            const PEER: &str = "PEER_ADDR";
            fn from_env(env: &Env) {
                let server = ServerConfig::from_env(env, PORT)?;
                let peer = env.upstream(PEER, "http://127.0.0.1:50052")?;
                let size = env.int_in("DEMO_LIMIT", 1, 1, 2)?;
                let text = "env.get(\"IN_A_STRING\")";
            }''')
        env = self.env()
        self.assertEqual(env.reads, {"LOG_FORMAT", "RUST_LOG", "LISTEN_ADDR", "SHUTDOWN_GRACE_PERIOD",
                                     "SHUTDOWN_DELAY", "PEER_ADDR", "DEMO_LIMIT"})
        self.assertEqual(env.required, {"PEER_ADDR"})
        self.assertEqual(envvars.listen_defaults(self.service), {"LISTEN_ADDR": 50099, "ADMIN_LISTEN_ADDR": 9199})

    def test_shared_functions_are_followed_transitively_and_tests_are_ignored(self):
        self.write("main.rs", r'''
            fn main() { config::layered(&env); }
            #[cfg(test)]
            mod tests { fn t() { env.get("SERVICE_TEST_ONLY"); } }
            #[cfg(test)]
            mod more;''')
        self.write("more.rs", 'fn t() { env.get("IN_A_TEST_FILE"); }')
        env = self.env()
        self.assertIn("LISTEN_ADDR", env.reads)  # layered → ServerConfig::from_env
        self.assertIn("SHARED_UPSTREAM_ADDR", env.required)
        for name in ("TEST_ONLY", "SERVICE_TEST_ONLY", "IN_A_TEST_FILE", "NOT_FROM_A_CALLED_FUNCTION", "IN_A_COMMENT"):
            self.assertNotIn(name, env.reads)

    def test_a_service_calling_no_shared_function_reads_only_its_own(self):
        self.write("main.rs", 'fn main() { env.flag("ONLY_THIS", true); map.get("lowercase"); }')
        self.assertEqual(self.env().reads, {"ONLY_THIS"})

    def test_durations_and_defaults(self):
        self.assertEqual(envvars.duration_default(self.shared, "SHUTDOWN_GRACE_PERIOD"), 10)
        self.assertEqual(envvars.duration_default(self.shared, "SHUTDOWN_DELAY"), 0)
        self.assertIsNone(envvars.duration_default(self.shared, "NOPE"))
        self.assertEqual(envvars.parse_duration("1500ms"), 1.5)
        self.assertEqual(envvars.parse_duration("2m"), 120)
        self.assertEqual(envvars.parse_duration("7"), 7)
        self.assertIsNone(envvars.parse_duration("1.5s"))


class MaskTest(unittest.TestCase):
    def test_mask_keeps_offsets_and_hides_literals_and_comments(self):
        src = 'let a = "{"; // }\nlet b = r#"}"#; let c = \'{\'; /* { /* } */ } */ fn x<\'a>() {}'
        masked = envvars.mask(src)
        self.assertEqual(len(masked), len(src))
        self.assertEqual(masked.count("{"), 1)
        self.assertEqual(masked.count("}"), 1)
        self.assertIn("fn x<'a>()", masked)


if __name__ == "__main__":
    unittest.main()
