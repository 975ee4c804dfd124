"""The corpus: consented emoji sets fetched from npm, rendered, and frozen into manifests."""
