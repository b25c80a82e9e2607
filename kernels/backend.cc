#include "kernels/backend.h"

namespace gqa {

DeviceBuffer& DeviceBuffer::operator=(DeviceBuffer&& o) noexcept {
  if (this != &o) {
    Reset();
    data_ = o.data_;
    bytes_ = o.bytes_;
    release_ = std::move(o.release_);
    o.data_ = nullptr;
    o.bytes_ = 0;
    o.release_ = nullptr;
  }
  return *this;
}

void DeviceBuffer::Reset() {
  if (data_ != nullptr && release_) release_(data_);
  data_ = nullptr;
  bytes_ = 0;
  release_ = nullptr;
}

void Backend::ConcatColumns(const float* src, int parts, int64_t part_stride, const int64_t* col_begin, int rows,
                            float* dst) {
  const int64_t width = col_begin[parts];
  for (int p = 0; p < parts; ++p) {
    const int64_t cols = col_begin[p + 1] - col_begin[p];
    for (int i = 0; i < rows; ++i) {
      CopyDeviceToDevice(dst + i * width + col_begin[p], src + p * part_stride + i * cols,
                         size_t(cols) * sizeof(float));
    }
  }
}

size_t Backend::MatrixBytes(const MatrixView& m) const {
  GQA_CHECK(m.layout == MatrixLayout::kRowMajor, "a layout of another backend");
  if (m.rows == 0 || m.cols == 0) return 0;
  return size_t((m.rows - 1) * m.row_stride + m.cols) * DTypeSize(m.dtype);
}

MatrixView MatrixView::RowSlice(int64_t begin, int64_t count) const {
  GQA_CHECK(layout == MatrixLayout::kRowMajor, "only a row-major matrix can be sliced");
  GQA_CHECK(begin >= 0 && count >= 0 && begin + count <= rows, "row slice out of range");
  MatrixView v = *this;
  v.data = static_cast<const char*>(data) + begin * row_stride * int64_t(DTypeSize(dtype));
  v.rows = count;
  return v;
}

MatrixView MatrixView::ColSlice(int64_t begin, int64_t count) const {
  GQA_CHECK(layout == MatrixLayout::kRowMajor, "only a row-major matrix can be sliced");
  GQA_CHECK(begin >= 0 && count >= 0 && begin + count <= cols, "column slice out of range");
  MatrixView v = *this;
  v.data = static_cast<const char*>(data) + begin * int64_t(DTypeSize(dtype));
  v.cols = count;
  return v;
}

}  // namespace gqa
