"""GStreamer pipeline strings for cameras and streams, checked by table (no camera here)."""
import pytest

from oncolens.appliance import gst
from oncolens.appliance.errors import UsageError

APPSINK = "videoconvert ! video/x-raw, format=BGR ! appsink drop=true max-buffers=1 sync=false"

TABLE = [
    (gst.csi_pipeline, dict(sensor_id=0),
     "nvarguscamerasrc sensor-id=0 ! video/x-raw(memory:NVMM), width=1280, height=720, "
     "framerate=30/1, format=NV12 ! nvvidconv flip-method=0 ! video/x-raw, format=BGRx ! "
     + APPSINK),
    (gst.csi_pipeline, dict(sensor_id=1, width=1920, height=1080, rate=60, flip="rotate-180"),
     "nvarguscamerasrc sensor-id=1 ! video/x-raw(memory:NVMM), width=1920, height=1080, "
     "framerate=60/1, format=NV12 ! nvvidconv flip-method=2 ! video/x-raw, format=BGRx ! "
     + APPSINK),
    (gst.csi_pipeline, dict(flip="counterclockwise"), "nvvidconv flip-method=1 !"),
    (gst.csi_pipeline, dict(flip="vertical"), "nvvidconv flip-method=6 !"),
    (gst.v4l2_pipeline, dict(device="/dev/video1"),
     "v4l2src device=/dev/video1 ! video/x-raw ! videoconvert ! " + APPSINK),
    (gst.v4l2_pipeline, dict(width=640, height=480, rate=30, codec="mjpeg", flip="horizontal"),
     "v4l2src device=/dev/video0 ! image/jpeg, width=640, height=480, framerate=30/1 ! "
     "jpegdec ! videoconvert ! videoflip method=horizontal-flip ! " + APPSINK),
    (gst.rtsp_pipeline, dict(uri="rtsp://cam.local:554/s1"),
     "rtspsrc location=rtsp://cam.local:554/s1 latency=200 ! rtph264depay ! h264parse ! "
     "avdec_h264 ! " + APPSINK),
    (gst.rtsp_pipeline, dict(uri="rtsp://cam/s", codec="h265", latency=50, jetson=True),
     "rtspsrc location=rtsp://cam/s latency=50 ! rtph265depay ! h265parse ! nvv4l2decoder ! "
     "nvvidconv ! video/x-raw, format=BGRx ! " + APPSINK),
    (gst.rtp_input_pipeline, dict(port=1234),
     'udpsrc port=1234 caps="application/x-rtp, media=(string)video, clock-rate=(int)90000, '
     'encoding-name=(string)H264, payload=(int)96" ! rtpjitterbuffer latency=200 ! '
     "rtph264depay ! h264parse ! avdec_h264 ! " + APPSINK),
    (gst.rtp_input_pipeline, dict(port=5000, address="239.1.1.1", codec="mjpeg"),
     "udpsrc address=239.1.1.1 port=5000 auto-multicast=true"),
    (gst.rtp_output_pipeline, dict(host="192.168.1.2", port=1234),
     "appsrc is-live=true ! videoconvert ! video/x-raw, format=I420 ! x264enc bitrate=4000 "
     "tune=zerolatency speed-preset=ultrafast ! h264parse ! rtph264pay config-interval=1 pt=96 "
     "! udpsink host=192.168.1.2 port=1234 sync=false async=false"),
    (gst.rtp_output_pipeline, dict(host="10.0.0.5", port=5000, codec="h265", bitrate=2000000,
                                   jetson=True),
     "appsrc is-live=true ! nvvidconv ! video/x-raw(memory:NVMM), format=I420 ! "
     "nvv4l2h265enc bitrate=2000000 insert-sps-pps=true ! h265parse ! rtph265pay "
     "config-interval=1 pt=96 ! udpsink host=10.0.0.5 port=5000 sync=false async=false"),
]


@pytest.mark.parametrize("builder, kwargs, expected", TABLE)
def test_pipeline_strings(builder, kwargs, expected):
    pipeline = builder(**kwargs)
    if expected.startswith(("nvarguscamerasrc", "v4l2src", "rtspsrc", "udpsrc port", "appsrc")):
        assert pipeline == expected
    else:
        assert expected in pipeline
    assert "  " not in pipeline and not pipeline.endswith("!")


@pytest.mark.parametrize("call, message", [
    (lambda: gst.csi_pipeline(flip="sideways"), "--input-flip: unknown value 'sideways'"),
    (lambda: gst.rtsp_pipeline("rtsp://x", codec="vp9"), "--input-codec: unknown codec 'vp9'"),
    (lambda: gst.v4l2_pipeline(codec="h264"), "a V4L2 camera takes raw or mjpeg"),
    (lambda: gst.rtp_output_pipeline("h", 1, codec="mjpeg"), "--output-codec: unknown codec"),
])
def test_bad_values_are_usage_errors(call, message):
    with pytest.raises(UsageError) as err:
        call()
    assert message in str(err.value)


def test_every_flip_name_has_a_pipeline_and_a_software_equivalent():
    import numpy as np
    from oncolens.appliance.sources import flip_image
    img = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)
    seen = set()
    for name, number, method in gst.FLIPS:
        assert "flip-method={}".format(number) in gst.csi_pipeline(flip=name)
        out = flip_image(img, name)
        assert out.shape == (img.shape if number in (0, 2, 4, 6) else (3, 2, 3)), name
        seen.add(out.tobytes())
    assert len(seen) == len(gst.FLIPS)  # the eight flips all differ
    assert (flip_image(img, "upper-left-diagonal") == img.transpose(1, 0, 2)).all()
    assert (flip_image(img, "horizontal") == img[:, ::-1]).all()


@pytest.mark.parametrize("uri, latency, expected", [
    ("rtsp://cam/s", 0, "rtspsrc location=rtsp://cam/s latency=0 "),
    ("rtsp://cam/s", None, "rtspsrc location=rtsp://cam/s latency=200 "),
    ("rtsp://cam/s", 50, "rtspsrc location=rtsp://cam/s latency=50 "),
    ("rtp://@:1234", 0, "rtpjitterbuffer latency=0 "),
    ("rtp://@:1234", None, "rtpjitterbuffer latency=200 "),
])
def test_input_latency_zero_is_no_jitter_buffer_delay(monkeypatch, uri, latency, expected):
    """--input-rtsp-latency 0 built rtspsrc latency=200 (0 read as 'the default'), while
    jetson_utils, whose flag it is, passes 0 on as 0 ms; only a flag left out is 200 now."""
    from oncolens.appliance import sources
    pipelines = []
    monkeypatch.setattr(sources, "opencv_has_gstreamer", lambda: True)
    monkeypatch.setattr(sources.gst, "is_jetson", lambda: False)
    monkeypatch.setattr(sources, "_gst_capture",
                        lambda pipeline: pipelines.append(pipeline) or (lambda: None))
    sources.open_source(uri, latency=latency, jetson_utils=False)
    assert len(pipelines) == 1 and expected in pipelines[0], pipelines


def test_input_latency_zero_is_named_where_it_cannot_apply(monkeypatch, caplog):
    """Through OpenCV's FFmpeg no latency applies: 0, now a value, is named as ignored."""
    from oncolens.appliance import sources
    monkeypatch.setattr(sources, "opencv_has_gstreamer", lambda: False)
    with caplog.at_level("WARNING"):
        sources.open_source("rtsp://127.0.0.1:9/s", latency=0, jetson_utils=False)
    assert "--input-latency is not supported for rtsp through OpenCV's FFmpeg" in caplog.text
