"""The peer pipeline: how public malaria projects serve a Keras model (e.g. a Flask app).

TensorFlow imported, Keras model loaded, each image loaded with
keras.utils.load_img(target_size=...) and classified by model.predict one at a
time; then the whole folder again with one batched model.predict. Prints one
JSON line per event so the caller can time the cold start (first result).
"""

import json
import sys
import time

T0 = time.perf_counter()

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402,F401
import keras  # noqa: E402


def main(model_path: str, list_file: str, per_image_limit: int) -> None:
    paths = [line.rstrip("\n") for line in open(list_file)]
    model = keras.models.load_model(model_path)
    size = model.input_shape[1]

    def load(p):
        return keras.utils.img_to_array(keras.utils.load_img(p, target_size=(size, size)))

    t = time.perf_counter()
    for i, p in enumerate(paths[:per_image_limit]):
        prob = float(model.predict(load(p)[None], verbose=0)[0, 0])
        if i == 0:
            print(json.dumps({"event": "first_result", "seconds_since_start": time.perf_counter() - T0}), flush=True)
    per_image = min(per_image_limit, len(paths)) / (time.perf_counter() - t)
    t = time.perf_counter()
    batch = np.stack([load(p) for p in paths])
    t_decoded = time.perf_counter()
    model.predict(batch, batch_size=32, verbose=0)
    t_end = time.perf_counter()
    print(json.dumps({"event": "done", "per_image_predict_images_per_s": per_image,
                      "batched_images_per_s": len(paths) / (t_end - t), "batched_predict_only_images_per_s": len(paths) / (t_end - t_decoded),
                      "n": len(paths), "last_probability": prob}), flush=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]))
