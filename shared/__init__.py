"""excamera's shared code: the state-passing VP8 codec (`shared.codec`) and the CLI."""
