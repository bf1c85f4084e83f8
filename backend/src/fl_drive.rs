//! `roundtable fl-drive`: plays a DLR-shaped training against endpoints.

/// Arguments of `roundtable fl-drive`.
#[derive(Debug, clap::Args)]
pub struct FlDriveArgs {}

/// Runs the drive.
pub async fn run(_args: FlDriveArgs) -> anyhow::Result<()> {
    anyhow::bail!("not implemented yet")
}
