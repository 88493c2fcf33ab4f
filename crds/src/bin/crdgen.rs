//! Prints every weir CRD as multi-document YAML on stdout:
//! `cargo run -p weir-crds --bin crdgen > crds/yaml/weir-crds.yaml`.

use std::io::Write;

fn main() -> std::process::ExitCode {
    match weir_crds::crds_yaml() {
        Ok(yaml) => {
            // A closed pipe (`| head`) is not worth a panic.
            let _ = std::io::stdout().write_all(yaml.as_bytes());
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("crdgen: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
