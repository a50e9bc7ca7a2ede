"""The stages of Mark-1, one public function each: extract, train, evaluate/predict, infer."""
