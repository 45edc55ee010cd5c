"""Drawing results on frames: white text on translucent black, top-left, one line a result."""
import numpy as np

FONT = 0  # cv2.FONT_HERSHEY_SIMPLEX


def text_scale(width):
    """Font scale and thickness that suit a frame ``width`` pixels wide."""
    scale = max(0.35, width / 900.0)
    return scale, max(1, int(round(scale * 1.6)))


def _pad(scale):
    """Margin around the text, in pixels, at font ``scale``."""
    return max(2, int(5 * scale))


MIN_SCALE = 0.1  # the smallest font scale text shrinks to before it wraps at spaces


def _wrap(lines, scale, thick, avail):
    """Split each line at spaces so every piece fits ``avail`` pixels, where words allow."""
    import cv2
    out = []
    for line in lines:
        words, current = line.split(" "), ""
        for word in words:
            trial = word if not current else current + " " + word
            if current and cv2.getTextSize(trial, FONT, scale, thick)[0][0] > avail:
                out.append(current)
                current = word
            else:
                current = trial
        out.append(current)
    return out


def _sizes(lines, scale, thick):
    import cv2
    return [cv2.getTextSize(line, FONT, scale, thick) for line in lines]


def _fit(shape, lines):
    """The lines as drawn (wrapped if need be) and ``layout``'s tuple for them."""
    h, w = shape[:2]
    scale, thick = text_scale(w)
    sizes = _sizes(lines, scale, thick)

    def too_wide():
        return max(s[0][0] for s in sizes) + 2 * _pad(scale) > w

    while too_wide() and scale > MIN_SCALE:
        # a small frame: shrink the text to fit its width rather than cut it off
        scale, thick = max(MIN_SCALE, scale * 0.9), 1
        sizes = _sizes(lines, scale, thick)
    if too_wide():
        # still too wide at the smallest scale: one word a line where it must
        lines = _wrap(lines, scale, thick, w - 2 * _pad(scale))
        sizes = _sizes(lines, scale, thick)
    line_h = max(s[0][1] + s[1] for s in sizes) + int(6 * scale) + 2
    pad = _pad(scale)
    box_w = min(w, max(s[0][0] for s in sizes) + 2 * pad)
    box_h = min(h, line_h * len(lines) + pad)
    return lines, (box_h, box_w, line_h, pad, scale, thick)


def layout(shape, lines):
    """Where ``draw_lines`` puts things: (box_h, box_w, line_h, pad, scale, thick)."""
    return _fit(shape, lines)[1]


def draw_lines(rgb, lines, alpha=0.55):
    """Return a copy of ``rgb`` with ``lines`` drawn in its top-left corner.

    Only the box behind the text changes; every pixel outside it is left as it was. On a
    frame too narrow for a line even at the smallest font, the line wraps at its spaces.
    """
    import cv2
    out = np.array(rgb, dtype=np.uint8, copy=True)
    if not lines:
        return out
    lines, (box_h, box_w, line_h, pad, scale, thick) = _fit(out.shape, lines)
    region = out[:box_h, :box_w].astype(np.float32)
    out[:box_h, :box_w] = (region * (1.0 - alpha)).astype(np.uint8)
    for n, line in enumerate(lines):
        baseline_y = pad + (n + 1) * line_h - int(6 * scale) - 2
        cv2.putText(out, line, (pad, baseline_y), FONT, scale, (255, 255, 255), thick,
                    cv2.LINE_AA)
    return out


def crop_box(src_hw, spec, out_hw):
    """The part of a frame the model saw, (top, left, bottom, right) in frame pixels.

    Mirrors ``preprocess.resize_to_input``: the whole frame for ``stretch``, the centre
    crop otherwise (a test checks the two agree).
    """
    from oncolens.appliance.preprocess import DEFAULT_CROP_RATIO
    src_h, src_w = int(src_hw[0]), int(src_hw[1])
    if spec.get("resize", "center_crop") == "stretch":
        return 0, 0, src_h, src_w
    out_h, out_w = int(out_hw[0]), int(out_hw[1])
    ratio = float(spec.get("crop_ratio", DEFAULT_CROP_RATIO))
    scale = max(out_h / ratio / src_h, out_w / ratio / src_w)
    new_h = max(out_h, int(round(src_h * scale)))
    new_w = max(out_w, int(round(src_w * scale)))
    top, left = (new_h - out_h) // 2, (new_w - out_w) // 2
    sy, sx = src_h / float(new_h), src_w / float(new_w)
    return (int(round(top * sy)), int(round(left * sx)),
            int(round((top + out_h) * sy)), int(round((left + out_w) * sx)))


def blend_cam(rgb, cam, box=None, alpha=0.45):
    """Blend a class activation map (h x w, values 0..1) over ``box`` of the frame (JET)."""
    import cv2
    out = np.array(rgb, dtype=np.uint8, copy=True)
    top, left, bottom, right = box or (0, 0, out.shape[0], out.shape[1])
    if bottom <= top or right <= left:
        return out
    cam = np.clip(np.nan_to_num(np.asarray(cam, dtype=np.float32)), 0.0, 1.0)
    heat = cv2.resize(cam, (right - left, bottom - top), interpolation=cv2.INTER_LINEAR)
    colour = cv2.applyColorMap((heat * 255.0).astype(np.uint8), cv2.COLORMAP_JET)
    colour = cv2.cvtColor(colour, cv2.COLOR_BGR2RGB).astype(np.float32)
    region = out[top:bottom, left:right].astype(np.float32)
    out[top:bottom, left:right] = (region * (1.0 - alpha) + colour * alpha).astype(np.uint8)
    return out


def render(rgb, lines, cam=None, box=None):
    """The annotated frame: the CAM heatmap (when given) under the text lines."""
    if cam is not None:
        rgb = blend_cam(rgb, cam, box)
    return draw_lines(rgb, lines)
