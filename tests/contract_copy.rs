//! `docs/contract.md` is a byte-identical copy of the shared contract
//! (`../shared/spec/contract.md`, beside the repository), so that the code's `§`
//! references can be followed inside the repository.

use std::path::Path;

#[test]
fn docs_contract_is_the_shared_contract() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let shared = root.join("../shared/spec/contract.md");
    let shared = std::fs::read(&shared).unwrap_or_else(|e| {
        panic!("{}: {e}: the shared contract must sit beside the repository", shared.display())
    });
    let copy = std::fs::read(root.join("docs/contract.md")).expect("reading docs/contract.md");
    assert!(
        copy == shared,
        "docs/contract.md differs from ../shared/spec/contract.md: copy it again (cp ../shared/spec/contract.md docs/contract.md)"
    );
}
