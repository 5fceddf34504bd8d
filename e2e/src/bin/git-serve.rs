//! `microplane-git-serve ADDRESS ROOT`: serves the git repositories under ROOT (`<ROOT>/<name>.git`)
//! over smart HTTP at ADDRESS until killed. `make up` runs it on the host's address on the node's
//! network, serving this working copy, so the tour's git MicroService builds from it: the operator
//! runs in a pod and cannot read the host's `file://` paths.

use std::net::SocketAddr;
use std::path::PathBuf;

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let (Some(addr), Some(root)) = (args.next(), args.next()) else {
        anyhow::bail!("usage: microplane-git-serve ADDRESS ROOT");
    };
    let addr: SocketAddr = addr.parse()?;
    let root = PathBuf::from(root);
    let server = microplane_e2e::git::GitServer::serve_dir(&root, addr)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    eprintln!("serving {} at http://{}/", root.display(), server.addr());
    tokio::signal::ctrl_c().await?;
    Ok(())
}
