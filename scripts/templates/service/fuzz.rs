//! `{{name}}.v1.{{Name}}Service`: any request bytes, any method (see `fuzz/src/lib.rs`).
#![no_main]

use std::sync::LazyLock;

use fuzz::GrpcTarget;

static TARGET: LazyLock<GrpcTarget> = LazyLock::new(|| {
    GrpcTarget::new("{{name}}.v1.{{Name}}Service", async |env| {
        let config = {{name}}::Config::from_env(&env).expect("valid config");
        {{name}}::build(config).await.expect("{{name}} binds")
    })
});

libfuzzer_sys::fuzz_target!(|data: &[u8]| TARGET.call(data));
