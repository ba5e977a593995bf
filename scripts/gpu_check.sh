# The CUDA device check (run on a machine with a GPU, from the repository root):
#   bash scripts/gpu_check.sh        ($OUT: a folder for the JSON it writes)
# Needs the project's dependencies (torch with CUDA, sympy, mpmath, python-flint,
# numpy, rich, hypothesis) importable with PYTHONPATH=src. The two mlp H=64 runs
# compare --device cuda with --device cpu on the same points: symbolic and finite
# differences stay batched on the CPU, autograd runs on the GPU, so the cuda
# run must not be slower (each prints its seconds).
set -x
nvidia-smi -L
export PYTHONPATH=src
python3 -c "import torch, sympy, mpmath, rich, hypothesis; print(torch.__version__, torch.cuda.is_available(), sympy.__version__)"
python3 -m pytest -q -p no:cacheprovider -o addopts="" tests/test_device.py tests/test_engines.py tests/test_compare.py 2>&1 | tail -5
for m in quadratic logistic softmax; do python3 -m gradcheck_lab verify $m --device cuda --points 20000 -q; echo "rc=$?"; done
python3 -m gradcheck_lab verify mlp --device cuda --dtype float32 --points 20000 -q; echo "rc=$?"
python3 -m gradcheck_lab verify mlp -H 64 --device cuda --points 5000 -q; echo "rc=$?"
python3 -m gradcheck_lab verify mlp -H 64 --device cpu --points 5000 -q; echo "rc=$?"
python3 -m gradcheck_lab verify quadratic --device cuda --x 2 --y 4 --no-random --json > $OUT/cuda_quadratic.json; echo "rc=$?"
python3 -m gradcheck_lab verify quadratic --device cuda:7 -q; echo "rc=$?"
