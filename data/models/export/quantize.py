"""Makes efficientnet_lite0_features_int8.onnx from the float model with ONNX Runtime's own
static quantisation (QDQ, per-channel int8 weights, uint8 activations), calibrated on
Fruits-360 Training photos preprocessed exactly as fruitpipe does at this size (`lite`
preset: (x - 127) / 128, bilinear resize, NCHW).

    python quantize.py FLOAT.onnx OUT.onnx PHOTOS_DIR [SIZE] [CALIBRATION_PHOTOS]

Reproducible: the calibration photos are the first CALIBRATION_PHOTOS (default 200) of the
sorted Training photos, taken every n-th so that every class is seen; `quantize.sh` pins
the package versions. EfficientNet-Lite was designed for int8 (ReLU6, no squeeze-excite).
"""
import pathlib
import sys

import numpy as np
from onnxruntime.quantization import (
    CalibrationDataReader,
    CalibrationMethod,
    QuantFormat,
    QuantType,
    quantize_static,
)
from onnxruntime.quantization.shape_inference import quant_pre_process
from PIL import Image

source, target, photos_dir = sys.argv[1:4]
size = int(sys.argv[4]) if len(sys.argv) > 4 else 224
count = int(sys.argv[5]) if len(sys.argv) > 5 else 200

photos = sorted(pathlib.Path(photos_dir).rglob("*.jpg"))
step = max(1, len(photos) // count)
chosen = photos[::step][:count]


class Photos(CalibrationDataReader):
    def __init__(self):
        self.batches = iter(chosen)

    def get_next(self):
        path = next(self.batches, None)
        if path is None:
            return None
        image = Image.open(path).convert("RGB").resize((size, size), Image.BILINEAR)
        pixels = (np.asarray(image, dtype=np.float32) - 127.0) / 128.0
        return {"input": pixels.transpose(2, 0, 1)[None]}


prepared = str(pathlib.Path(target).with_suffix(".prep.onnx"))
quant_pre_process(source, prepared)
quantize_static(
    prepared,
    target,
    Photos(),
    quant_format=QuantFormat.QDQ,
    per_channel=True,
    weight_type=QuantType.QInt8,
    activation_type=QuantType.QUInt8,
    calibrate_method=CalibrationMethod.MinMax,
)
pathlib.Path(prepared).unlink()
print(f"wrote {target} from {len(chosen)} calibration photos at {size}x{size}")
