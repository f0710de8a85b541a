"""Scale-out on Ray (the [cluster] extra): bulk defence of image files over Ray Data with a Defender actor per
worker (bulk.py, torch-free, results in shards.py's Parquet or NPZ shards), and the evaluation's attacks and
defences as Ray tasks that fill its cache (evaluation.py). Ray is imported only when a cluster is asked for."""
