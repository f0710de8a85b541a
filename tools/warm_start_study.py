"""Cold and warm starts, and no defence, over a video with ground truth.

    python tools/warm_start_study.py runs/video/digits.mkv --out docs/results/warm_start_video.json

The logic is diffdefense.runtime.stream.warm_start_study.
"""

from diffdefense.runtime.stream.warm_start_study import main

if __name__ == "__main__":
    main()
