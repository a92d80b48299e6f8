//! Compiles every `proto/**/*.proto` into Rust (messages, tonic clients and servers)
//! and writes one encoded `FileDescriptorSet` for server reflection.
//!
//! protox is a pure-Rust protobuf compiler, so a fresh clone builds without `protoc`.
//! It also bundles the well-known types (`google/protobuf/*.proto`): the descriptor set
//! includes every imported file, so reflection clients can resolve `Timestamp` & co.
//!
//! It also writes `retry_safe.rs`: the methods whose proto says
//! `option idempotency_level = IDEMPOTENT;` (or `NO_SIDE_EFFECTS`), which the shared
//! channel may send again (`contracts::RETRY_SAFE_METHODS`, which the services hand to
//! `shared::client::channel`).

use std::path::{Path, PathBuf};
use std::{env, fs, io};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto_root = Path::new("proto");
    let mut files = Vec::new();
    collect_protos(proto_root, &mut files)?;
    files.sort();
    println!("cargo:rerun-if-changed={}", proto_root.display());
    for file in &files {
        println!("cargo:rerun-if-changed={}", file.display());
    }

    let mut compiler = protox::Compiler::new([proto_root])?;
    // Imports (our own and the well-known types) go into the set, so reflection
    // can answer for every file a service refers to. Source info carries the proto
    // comments, which `grpcurl describe` shows.
    compiler.include_imports(true).include_source_info(true);
    for file in &files {
        compiler.open_file(file.strip_prefix(proto_root)?)?;
    }

    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    fs::write(
        out_dir.join("file_descriptor_set.bin"),
        compiler.encode_file_descriptor_set(),
    )?;

    fs::write(
        out_dir.join("retry_safe.rs"),
        retry_safe_methods(&compiler.file_descriptor_set()),
    )?;

    tonic_prost_build::configure()
        // One generated file that nests every package as modules: `inventory::v1`, …
        .include_file("packages.rs")
        .compile_fds(compiler.file_descriptor_set())?;
    Ok(())
}

/// `pub const RETRY_SAFE_METHODS: &[&str]`: the paths (`/package.Service/Method`) of
/// our own methods marked IDEMPOTENT or NO_SIDE_EFFECTS, sorted. Client-streaming
/// methods are left out whatever they say: the channel would have to keep the whole
/// stream to send it again.
fn retry_safe_methods(set: &prost_types::FileDescriptorSet) -> String {
    use prost_types::method_options::IdempotencyLevel;
    let mut paths = Vec::new();
    // The well-known types come along as imports; they declare no services.
    for file in &set.file {
        for service in &file.service {
            for method in &service.method {
                let level = method
                    .options
                    .as_ref()
                    .map_or(IdempotencyLevel::IdempotencyUnknown, |o| {
                        o.idempotency_level()
                    });
                if level != IdempotencyLevel::IdempotencyUnknown && !method.client_streaming() {
                    paths.push(format!(
                        "/{}.{}/{}",
                        file.package(),
                        service.name(),
                        method.name()
                    ));
                }
            }
        }
    }
    paths.sort();
    let mut out = String::from("&[\n");
    for path in paths {
        out.push_str(&format!("    {path:?},\n"));
    }
    out.push(']');
    out
}

fn collect_protos(dir: &Path, out: &mut Vec<PathBuf>) -> io::Result<()> {
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            collect_protos(&path, out)?;
        } else if path.extension().is_some_and(|ext| ext == "proto") {
            out.push(path);
        }
    }
    Ok(())
}
