"""Drawing results on frames: white text on translucent black, top-left, one line a result."""
import numpy as np

FONT = 0  # cv2.FONT_HERSHEY_SIMPLEX


def text_scale(width):
    """Font scale and thickness that suit a frame ``width`` pixels wide."""
    scale = max(0.35, width / 900.0)
    return scale, max(1, int(round(scale * 1.6)))


def layout(shape, lines):
    """Where ``draw_lines`` puts things: (box_h, box_w, line_h, pad, scale, thick)."""
    import cv2
    h, w = shape[:2]
    scale, thick = text_scale(w)
    sizes = [cv2.getTextSize(line, FONT, scale, thick) for line in lines]
    line_h = max(s[0][1] + s[1] for s in sizes) + int(6 * scale) + 2
    pad = max(2, int(5 * scale))
    box_w = min(w, max(s[0][0] for s in sizes) + 2 * pad)
    box_h = min(h, line_h * len(lines) + pad)
    return box_h, box_w, line_h, pad, scale, thick


def draw_lines(rgb, lines, alpha=0.55):
    """Return a copy of ``rgb`` with ``lines`` drawn in its top-left corner.

    Only the box behind the text changes; every pixel outside it is left as it was.
    """
    import cv2
    out = np.array(rgb, dtype=np.uint8, copy=True)
    if not lines:
        return out
    box_h, box_w, line_h, pad, scale, thick = layout(out.shape, lines)
    region = out[:box_h, :box_w].astype(np.float32)
    out[:box_h, :box_w] = (region * (1.0 - alpha)).astype(np.uint8)
    for n, line in enumerate(lines):
        baseline_y = pad + (n + 1) * line_h - int(6 * scale) - 2
        cv2.putText(out, line, (pad, baseline_y), FONT, scale, (255, 255, 255), thick,
                    cv2.LINE_AA)
    return out
