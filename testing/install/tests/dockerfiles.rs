//! The Dockerfiles build what they copy: each `RUN cargo build -p <package> --bin <bin>` names
//! a workspace package that declares that binary, the runtime stage copies
//! `<workdir>/target/release/<bin>` from the build stage, and the entry point runs the copy.
//! No Docker engine runs here, so the paths are checked against `cargo metadata`.

use std::collections::BTreeMap;
use std::process::Command;

use serde_json::Value;
use weir_install_tests::repo_root;

/// What a Dockerfile says, as far as these tests need.
#[derive(Debug, Default)]
struct Dockerfile {
    /// Stage name (`FROM x AS name`) -> base image, in order; unnamed stages by index.
    stages: Vec<(String, String)>,
    workdir: BTreeMap<String, String>,
    /// `cargo build` arguments, by stage.
    cargo_build: Vec<(String, Vec<String>)>,
    /// (stage, from stage, source, destination)
    copies_from: Vec<(String, String, String, String)>,
    user: Option<String>,
    entrypoint: Vec<String>,
    apt_packages: Vec<String>,
}

/// Parses the instructions (joining `\` continuations, skipping comments).
fn parse(text: &str) -> Dockerfile {
    let mut lines = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        match line.strip_suffix('\\') {
            Some(part) => current.push_str(part),
            None => {
                current.push_str(line);
                lines.push(std::mem::take(&mut current));
            }
        }
    }
    let mut d = Dockerfile::default();
    for line in lines {
        let words: Vec<String> = line.split_whitespace().map(str::to_owned).collect();
        let stage = d.stages.last().map(|(n, _)| n.clone()).unwrap_or_default();
        match words[0].as_str() {
            "FROM" => {
                let name = match words.get(2).map(|w| w.to_ascii_uppercase()) {
                    Some(w) if w == "AS" => words[3].clone(),
                    _ => d.stages.len().to_string(),
                };
                d.stages.push((name, words[1].clone()));
            }
            "WORKDIR" => {
                d.workdir.insert(stage, words[1].clone());
            }
            "RUN" => {
                for command in line[3..].split("&&") {
                    let args: Vec<String> = command.split_whitespace().map(str::to_owned).collect();
                    if args.starts_with(&["cargo".to_owned(), "build".to_owned()]) {
                        d.cargo_build.push((stage.clone(), args[2..].to_vec()));
                    }
                    if args.iter().any(|a| a == "apt-get") && args.iter().any(|a| a == "install") {
                        d.apt_packages.extend(
                            args.iter().filter(|a| !a.starts_with('-') && a.contains(char::is_alphanumeric)).cloned(),
                        );
                    }
                }
            }
            "COPY" => {
                if let Some(from) = words[1].strip_prefix("--from=") {
                    d.copies_from.push((stage, from.to_owned(), words[2].clone(), words[3].clone()));
                }
            }
            "USER" => d.user = Some(words[1].clone()),
            "ENTRYPOINT" => d.entrypoint = serde_json::from_str(line["ENTRYPOINT".len()..].trim()).expect("exec form"),
            _ => {}
        }
    }
    d
}

/// The value of `--flag value` or `--flag=value` in `args`.
fn flag(args: &[String], name: &str) -> Option<String> {
    args.iter().enumerate().find_map(|(i, a)| {
        if a == name {
            args.get(i + 1).cloned()
        } else {
            a.strip_prefix(&format!("{name}=")).map(str::to_owned)
        }
    })
}

/// Workspace package name -> its binary targets, from `cargo metadata --no-deps`.
fn workspace_bins() -> BTreeMap<String, Vec<String>> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let out = Command::new(cargo)
        .args(["metadata", "--format-version", "1", "--no-deps", "--offline"])
        .current_dir(repo_root())
        .output()
        .expect("run cargo metadata");
    assert!(out.status.success(), "cargo metadata: {}", String::from_utf8_lossy(&out.stderr));
    let meta: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    meta["packages"]
        .as_array()
        .expect("packages")
        .iter()
        .map(|p| {
            let bins = p["targets"]
                .as_array()
                .expect("targets")
                .iter()
                .filter(|t| t["kind"].as_array().is_some_and(|k| k.iter().any(|k| k == "bin")))
                .map(|t| t["name"].as_str().expect("name").to_owned())
                .collect();
            (p["name"].as_str().expect("name").to_owned(), bins)
        })
        .collect()
}

/// Checks one Dockerfile and returns it.
fn check(file: &str, package: &str, bin: &str) -> Dockerfile {
    let root = repo_root();
    let d = parse(&std::fs::read_to_string(root.join(file)).expect(file));
    let bins = workspace_bins();

    assert_eq!(d.cargo_build.len(), 1, "{file}: one cargo build");
    let (stage, args) = &d.cargo_build[0];
    assert_eq!(flag(args, "-p").as_deref(), Some(package), "{file}: builds package {package}");
    assert_eq!(flag(args, "--bin").as_deref(), Some(bin), "{file}: builds binary {bin}");
    assert!(args.iter().any(|a| a == "--release"), "{file}: a release build");
    assert!(args.iter().any(|a| a == "--locked"), "{file}: --locked (the committed Cargo.lock)");
    assert!(root.join("Cargo.lock").is_file());
    let declared = bins.get(package).unwrap_or_else(|| panic!("{file}: {package} is not a workspace package"));
    assert!(declared.contains(&bin.to_owned()), "{file}: {package} declares no binary {bin} (it has {declared:?})");

    // The build stage: Rust of the workspace's rust-version.
    let build_image = &d.stages.iter().find(|(n, _)| n == stage).expect("the build stage").1;
    let manifest = std::fs::read_to_string(root.join("Cargo.toml")).expect("Cargo.toml");
    let rust_version = manifest
        .lines()
        .find_map(|l| l.strip_prefix("rust-version = "))
        .expect("workspace rust-version")
        .trim_matches('"');
    assert_eq!(build_image, &format!("rust:{rust_version}-bookworm"), "{file}: the build image");

    // The runtime stage copies what cargo wrote: <workdir>/target/release/<bin>.
    let workdir = d.workdir.get(stage).unwrap_or_else(|| panic!("{file}: no WORKDIR in the build stage"));
    let runtime = &d.stages.last().expect("stages").0;
    let copies: Vec<_> = d.copies_from.iter().filter(|(s, ..)| s == runtime).collect();
    assert_eq!(copies.len(), 1, "{file}: one COPY --from in the runtime stage");
    let (_, from, source, destination) = copies[0];
    assert_eq!(from, stage, "{file}: copies from the build stage");
    assert_eq!(source, &format!("{workdir}/target/release/{bin}"), "{file}: the binary cargo builds");
    assert_eq!(d.entrypoint.first(), Some(destination), "{file}: the entry point runs the copied binary");
    d
}

#[test]
fn the_operator_image_builds_and_runs_the_operator_as_nonroot() {
    let d = check("deploy/Dockerfile.operator", "weir-operator", "weir-operator");
    assert_eq!(d.stages.last().expect("stages").1, "gcr.io/distroless/cc-debian12:nonroot");
    assert_eq!(d.user.as_deref(), Some("65532:65532"), "the chart's runAsUser");
}

#[test]
fn the_agent_image_builds_the_bpf_programs_and_runs_as_root() {
    let d = check("deploy/Dockerfile.agent", "weir-agent", "weir-agent");
    assert_eq!(d.stages.last().expect("stages").1, "gcr.io/distroless/cc-debian12");
    assert!(d.user.is_none(), "the agent runs as root: its capabilities are effective only for uid 0");
    // What ebpf/build.rs needs, as scripts/setup.sh installs it.
    for package in ["clang-19", "libbpf-dev"] {
        assert!(d.apt_packages.iter().any(|p| p == package), "Dockerfile.agent installs no {package}");
        let setup = std::fs::read_to_string(repo_root().join("scripts/setup.sh")).expect("setup.sh");
        assert!(setup.contains(package), "scripts/setup.sh no longer installs {package}");
    }
}

#[test]
fn the_build_context_keeps_what_cargo_needs() {
    // BuildKit reads <Dockerfile>.dockerignore; the sources, manifests and lockfile stay.
    for file in ["deploy/Dockerfile.operator.dockerignore", "deploy/Dockerfile.agent.dockerignore"] {
        let text = std::fs::read_to_string(repo_root().join(file)).expect(file);
        let patterns: Vec<&str> =
            text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')).collect();
        assert!(patterns.contains(&"target/"), "{file}: leave the build output out of the context");
        for needed in ["Cargo.toml", "Cargo.lock", "src", "ebpf", "operator", "node-agent", "crds"] {
            assert!(
                !patterns.iter().any(|p| p.trim_end_matches('/') == needed || *p == "*" || *p == "**"),
                "{file}: excludes {needed}"
            );
        }
    }
}
