"""Make a simulated camera video of MNIST digits, some attacked, with its ground truth.

    python tools/make_video.py --out runs/video/digits.mkv

The logic is diffdefense.reference.digit_video.
"""

from diffdefense.reference.digit_video import main

if __name__ == "__main__":
    main()
