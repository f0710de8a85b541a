"""A contact sheet of a video's frames.

    python tools/video_frames.py runs/video/annotated.mp4 --frames 10,30,50,70,90,110 --out docs/figures/stream_demo.png

The logic is diffdefense.runtime.stream.contact_sheet.
"""

from diffdefense.runtime.stream.contact_sheet import main

if __name__ == "__main__":
    main()
