#include "io/torch_checkpoint.h"

#include <algorithm>
#include <cstring>
#include <functional>
#include <limits>

#include "io/error.h"
#include "num/formats.h"

namespace lq::io {

int64_t TorchTensorInfo::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

bool TorchTensorInfo::contiguous() const {
  int64_t expect = 1;
  for (size_t i = shape.size(); i-- > 0;) {
    if (shape[i] != 1 && stride[i] != expect) return false;
    expect *= shape[i];
  }
  return true;
}

namespace {

// ---- zip ----------------------------------------------------------------------------------------

uint16_t u16(const uint8_t* p) { return uint16_t(p[0] | (p[1] << 8)); }
uint32_t u32(const uint8_t* p) { return uint32_t(p[0]) | (uint32_t(p[1]) << 8) | (uint32_t(p[2]) << 16) | (uint32_t(p[3]) << 24); }
uint64_t u64(const uint8_t* p) { return uint64_t(u32(p)) | (uint64_t(u32(p + 4)) << 32); }

struct Entry {
  const uint8_t* data = nullptr;
  uint64_t size = 0;
};

// Central directory of a zip archive whose entries are stored uncompressed (torch.save's writer);
// zip64 records are understood. Every offset and size is checked against the image.
std::map<std::string, Entry> read_zip(const uint8_t* d, size_t n, const std::string& file) {
  auto bad = [&](const std::string& what) -> void { fail(file, "not a valid PyTorch zip archive: " + what); };
  constexpr size_t kEocd = 22;
  if (n < kEocd) bad("too short for a zip end record");
  if (n >= 2 && d[0] == 0x80 && d[1] <= 5)
    fail(file, "legacy (pre-1.6, non-zip) PyTorch file: re-save it with a current torch.save");
  // End of central directory: the last signature within the final 64 KiB + 22 bytes.
  size_t eocd = std::string::npos;
  const size_t lo = n > kEocd + 65535 ? n - kEocd - 65535 : 0;
  for (size_t i = n - kEocd + 1; i-- > lo;)
    if (u32(d + i) == 0x06054b50) {
      eocd = i;
      break;
    }
  if (eocd == std::string::npos) bad("no end-of-central-directory record");
  uint64_t count = u16(d + eocd + 10), cd_size = u32(d + eocd + 12), cd_off = u32(d + eocd + 16);
  if (count == 0xFFFF || cd_size == 0xFFFFFFFFu || cd_off == 0xFFFFFFFFu) {  // zip64
    if (eocd < 20 || u32(d + eocd - 20) != 0x07064b50) bad("zip64 end record locator missing");
    const uint64_t rec = u64(d + eocd - 20 + 8);
    if (rec > n || n - rec < 56 || u32(d + rec) != 0x06064b50) bad("zip64 end record out of range");
    count = u64(d + rec + 32);
    cd_size = u64(d + rec + 40);
    cd_off = u64(d + rec + 48);
  }
  if (cd_off > n || cd_size > n - cd_off) bad("central directory out of range");
  if (count > cd_size / 46) bad("central directory entry count does not fit its size");
  std::map<std::string, Entry> out;
  size_t p = cd_off;
  const size_t end = cd_off + cd_size;
  for (uint64_t k = 0; k < count; ++k) {
    if (end - p < 46 || u32(d + p) != 0x02014b50) bad("central directory entry " + std::to_string(k) + " malformed");
    const uint16_t flags = u16(d + p + 8), method = u16(d + p + 10);
    uint64_t csize = u32(d + p + 20), usize = u32(d + p + 24), local = u32(d + p + 42);
    const size_t name_len = u16(d + p + 28), extra_len = u16(d + p + 30), comment_len = u16(d + p + 32);
    if (end - p - 46 < name_len + extra_len + comment_len) bad("central directory entry " + std::to_string(k) + " overruns");
    const std::string name(reinterpret_cast<const char*>(d + p + 46), name_len);
    // zip64 extra field: the 0xFFFFFFFF fields in order usize, csize, local offset.
    for (size_t e = p + 46 + name_len, ee = e + extra_len; ee - e >= 4;) {
      const uint16_t id = u16(d + e), len = u16(d + e + 2);
      if (ee - e - 4 < len) bad("entry " + name + ": extra field overruns");
      if (id == 0x0001) {
        size_t q = e + 4, qe = q + len;
        auto take = [&](uint64_t& v) {
          if (v != 0xFFFFFFFFu) return;
          if (qe - q < 8) bad("entry " + name + ": short zip64 field");
          v = u64(d + q);
          q += 8;
        };
        take(usize);
        take(csize);
        take(local);
      }
      e += 4 + len;
    }
    if (method != 0) bad("entry " + name + " is compressed (method " + std::to_string(method) + "); torch.save stores entries uncompressed");
    if (flags & 1) bad("entry " + name + " is encrypted");
    if (csize != usize) bad("entry " + name + ": stored sizes disagree");
    if (local > n || n - local < 30 || u32(d + local) != 0x04034b50) bad("entry " + name + ": local header out of range");
    const uint64_t data_off = local + 30 + u16(d + local + 26) + u16(d + local + 28);
    if (data_off > n || usize > n - data_off) bad("entry " + name + ": data out of range");
    if (!out.emplace(name, Entry{d + data_off, usize}).second) bad("duplicate entry " + name);
    p += 46 + name_len + extra_len + comment_len;
  }
  return out;
}

// ---- pickle -------------------------------------------------------------------------------------

struct Value;
using V = std::shared_ptr<Value>;

struct Value {
  enum class Kind { None, Bool, Int, Float, Str, Tuple, List, Dict, Global, Storage, Tensor };
  Kind kind = Kind::None;
  int64_t i = 0;
  double f = 0;
  std::string s, s2;                      // Str; Global module / name; Storage key
  std::vector<V> items;                   // Tuple, List
  std::vector<std::pair<V, V>> entries;   // Dict (insertion order)
  DType dtype = DType::F32;               // Storage
  TorchTensorInfo tensor;                 // Tensor
};

V make(Value::Kind k) {
  auto v = std::make_shared<Value>();
  v->kind = k;
  return v;
}

const char* kind_name(Value::Kind k) {
  switch (k) {
    case Value::Kind::None: return "None";
    case Value::Kind::Bool: return "bool";
    case Value::Kind::Int: return "int";
    case Value::Kind::Float: return "float";
    case Value::Kind::Str: return "str";
    case Value::Kind::Tuple: return "tuple";
    case Value::Kind::List: return "list";
    case Value::Kind::Dict: return "dict";
    case Value::Kind::Global: return "global";
    case Value::Kind::Storage: return "storage";
    case Value::Kind::Tensor: return "tensor";
  }
  return "?";
}

struct StorageRef {
  DType dtype;
  int64_t numel;
};

class Unpickler {
 public:
  Unpickler(const uint8_t* d, size_t n, std::string where) : d_(d), n_(n), where_(std::move(where)) {}

  V run() {
    while (true) {
      const uint8_t op = byte();
      switch (op) {
        case 0x80: byte(); break;                           // PROTO
        case 0x95: take(8); break;                          // FRAME
        case '.': {                                         // STOP
          if (stack_.size() != 1 || !marks_.empty()) bad("STOP with " + std::to_string(stack_.size()) + " values on the stack");
          return stack_.back();
        }
        case 'N': push(make(Value::Kind::None)); break;
        case 0x88: case 0x89: {                             // NEWTRUE / NEWFALSE
          V v = make(Value::Kind::Bool);
          v->i = op == 0x88;
          push(v);
          break;
        }
        case 'J': push_int(int32_t(u32(take(4)))); break;   // BININT
        case 'K': push_int(byte()); break;                  // BININT1
        case 'M': push_int(u16(take(2))); break;            // BININT2
        case 0x8a: {                                        // LONG1
          const size_t len = byte();
          if (len > 8) bad("integer wider than 64 bits");
          const uint8_t* p = take(len);
          uint64_t u = 0;
          for (size_t k = 0; k < len; ++k) u |= uint64_t(p[k]) << (8 * k);
          if (len > 0 && len < 8 && (p[len - 1] & 0x80)) u |= ~uint64_t(0) << (8 * len);  // sign-extend
          push_int(int64_t(u));
          break;
        }
        case 'G': {                                         // BINFLOAT (big-endian)
          const uint8_t* p = take(8);
          uint64_t u = 0;
          for (int k = 0; k < 8; ++k) u = (u << 8) | p[k];
          V v = make(Value::Kind::Float);
          std::memcpy(&v->f, &u, 8);
          push(v);
          break;
        }
        case 'X': push_str(u32(take(4))); break;            // BINUNICODE
        case 0x8c: push_str(byte()); break;                 // SHORT_BINUNICODE
        case 0x8d: push_str(u64(take(8))); break;           // BINUNICODE8
        case 'c': {                                         // GLOBAL "module\nname\n"
          V g = make(Value::Kind::Global);
          g->s = line();
          g->s2 = line();
          push(g);
          break;
        }
        case 0x93: {                                        // STACK_GLOBAL
          V name = pop(), mod = pop();
          if (mod->kind != Value::Kind::Str || name->kind != Value::Kind::Str) bad("STACK_GLOBAL needs two strings");
          V g = make(Value::Kind::Global);
          g->s = mod->s;
          g->s2 = name->s;
          push(g);
          break;
        }
        case 'q': memo_put(byte()); break;                  // BINPUT
        case 'r': memo_put(u32(take(4))); break;            // LONG_BINPUT
        case 0x94: memo_put(uint32_t(memo_.size())); break; // MEMOIZE
        case 'h': memo_get(byte()); break;                  // BINGET
        case 'j': memo_get(u32(take(4))); break;            // LONG_BINGET
        case '(': marks_.push_back(stack_.size()); break;   // MARK
        case ')': push(make(Value::Kind::Tuple)); break;    // EMPTY_TUPLE
        case ']': push(make(Value::Kind::List)); break;     // EMPTY_LIST
        case '}': push(make(Value::Kind::Dict)); break;     // EMPTY_DICT
        case 't': case 'l': {                               // TUPLE / LIST
          V v = make(op == 't' ? Value::Kind::Tuple : Value::Kind::List);
          v->items = pop_mark();
          push(v);
          break;
        }
        case 'd': {                                         // DICT
          V v = make(Value::Kind::Dict);
          set_items(*v, pop_mark());
          push(v);
          break;
        }
        case 0x85: case 0x86: case 0x87: {                  // TUPLE1/2/3
          const size_t k = size_t(op - 0x84);
          if (stack_.size() < k + floor()) bad("TUPLE" + std::to_string(k) + " on a short stack");
          V v = make(Value::Kind::Tuple);
          v->items.assign(stack_.end() - long(k), stack_.end());
          stack_.resize(stack_.size() - k);
          push(v);
          break;
        }
        case 'a': {                                         // APPEND
          V x = pop();
          list_top()->items.push_back(x);
          break;
        }
        case 'e': {                                         // APPENDS
          auto xs = pop_mark();
          V l = list_top();
          l->items.insert(l->items.end(), xs.begin(), xs.end());
          break;
        }
        case 's': {                                         // SETITEM
          V val = pop(), key = pop();
          set_items(*dict_top(), {key, val});
          break;
        }
        case 'u': {                                         // SETITEMS
          auto xs = pop_mark();
          set_items(*dict_top(), xs);
          break;
        }
        case 'b': {                                         // BUILD: state of an OrderedDict (_metadata), ignored
          V state = pop();
          if (top()->kind != Value::Kind::Dict) bad("BUILD on a " + std::string(kind_name(top()->kind)) + " (only dict state is accepted)");
          (void)state;
          break;
        }
        case 'Q': {                                         // BINPERSID
          V pid = pop();
          push(persistent_load(*pid));
          break;
        }
        case 'R': {                                         // REDUCE
          V args = pop(), fn = pop();
          push(reduce(*fn, *args));
          break;
        }
        default: {
          char hex[8];
          std::snprintf(hex, sizeof hex, "0x%02x", op);
          bad(std::string("unsupported pickle opcode ") + hex + " at byte " + std::to_string(pos_ - 1) +
              " (only state dicts of tensors are read)");
        }
      }
    }
  }

  std::map<std::string, StorageRef> storages;

 private:
  [[noreturn]] void bad(const std::string& what) const { fail(where_, what); }

  uint8_t byte() {
    if (pos_ >= n_) bad("pickle truncated");
    return d_[pos_++];
  }
  const uint8_t* take(uint64_t k) {
    if (k > n_ - pos_) bad("pickle truncated");
    const uint8_t* p = d_ + pos_;
    pos_ += size_t(k);
    return p;
  }
  std::string line() {
    const uint8_t* start = d_ + pos_;
    const void* nl = std::memchr(start, '\n', n_ - pos_);
    if (!nl) bad("pickle truncated in GLOBAL");
    const size_t len = size_t(static_cast<const uint8_t*>(nl) - start);
    pos_ += len + 1;
    return std::string(reinterpret_cast<const char*>(start), len);
  }
  size_t floor() const { return marks_.empty() ? 0 : marks_.back(); }
  void push(V v) {
    if (stack_.size() >= kMaxStack) bad("pickle stack too deep");
    stack_.push_back(std::move(v));
  }
  V pop() {
    if (stack_.size() <= floor()) bad("pickle stack underflow");
    V v = stack_.back();
    stack_.pop_back();
    return v;
  }
  V top() {
    if (stack_.size() <= floor()) bad("pickle stack underflow");
    return stack_.back();
  }
  V list_top() {
    V l = top();
    if (l->kind != Value::Kind::List) bad("APPEND to a " + std::string(kind_name(l->kind)));
    return l;
  }
  V dict_top() {
    V l = top();
    if (l->kind != Value::Kind::Dict) bad("SETITEM on a " + std::string(kind_name(l->kind)));
    return l;
  }
  std::vector<V> pop_mark() {
    if (marks_.empty()) bad("pickle MARK missing");
    const size_t m = marks_.back();
    marks_.pop_back();
    std::vector<V> xs(stack_.begin() + long(m), stack_.end());
    stack_.resize(m);
    return xs;
  }
  void push_int(int64_t x) {
    V v = make(Value::Kind::Int);
    v->i = x;
    push(v);
  }
  void push_str(uint64_t len) {
    V v = make(Value::Kind::Str);
    const uint8_t* p = take(len);
    v->s.assign(reinterpret_cast<const char*>(p), size_t(len));
    push(v);
  }
  void memo_put(uint32_t k) {
    if (k > kMaxMemo) bad("pickle memo index too large");
    memo_[k] = top();
  }
  void memo_get(uint32_t k) {
    auto it = memo_.find(k);
    if (it == memo_.end()) bad("pickle memo entry " + std::to_string(k) + " missing");
    push(it->second);
  }
  void set_items(Value& dict, const std::vector<V>& xs) {
    if (xs.size() % 2) bad("odd number of dict items");
    for (size_t k = 0; k < xs.size(); k += 2) dict.entries.emplace_back(xs[k], xs[k + 1]);
  }

  static bool is_global(const Value& v, const char* mod, const char* name) {
    return v.kind == Value::Kind::Global && v.s == mod && v.s2 == name;
  }

  V persistent_load(const Value& pid) {
    // ('storage', torch.<Type>Storage, key, location, numel)
    if (pid.kind != Value::Kind::Tuple || pid.items.size() != 5 || pid.items[0]->kind != Value::Kind::Str ||
        pid.items[0]->s != "storage")
      bad("unsupported persistent id (expected a ('storage', type, key, location, numel) tuple)");
    const Value& type = *pid.items[1];
    const Value& key = *pid.items[2];
    const Value& numel = *pid.items[4];
    if (type.kind != Value::Kind::Global || type.s != "torch") bad("storage type is not a torch global");
    DType dt;
    if (type.s2 == "FloatStorage") dt = DType::F32;
    else if (type.s2 == "HalfStorage") dt = DType::F16;
    else if (type.s2 == "BFloat16Storage") dt = DType::BF16;
    else if (type.s2 == "DoubleStorage") dt = DType::F64;
    else bad("unsupported storage type torch." + type.s2 + " (float32/16, bfloat16 and float64 are read)");
    if (key.kind != Value::Kind::Str || numel.kind != Value::Kind::Int || numel.i < 0)
      bad("malformed storage record");
    auto [it, fresh] = storages.emplace(key.s, StorageRef{dt, numel.i});
    if (!fresh && (it->second.dtype != dt || it->second.numel != numel.i))
      bad("storage " + key.s + " is described twice with different types or sizes");
    V v = make(Value::Kind::Storage);
    v->s = key.s;
    v->dtype = dt;
    v->i = numel.i;
    return v;
  }

  std::vector<int64_t> int_tuple(const Value& t, const char* what) {
    if (t.kind != Value::Kind::Tuple) bad(std::string(what) + " is not a tuple");
    std::vector<int64_t> out;
    for (const V& x : t.items) {
      if (x->kind != Value::Kind::Int || x->i < 0) bad(std::string(what) + " holds a non-integer or negative entry");
      out.push_back(x->i);
    }
    return out;
  }

  V reduce(const Value& fn, const Value& args) {
    if (args.kind != Value::Kind::Tuple) bad("REDUCE arguments are not a tuple");
    if (is_global(fn, "collections", "OrderedDict")) {
      if (!args.items.empty()) bad("OrderedDict built with arguments");
      return make(Value::Kind::Dict);
    }
    if (is_global(fn, "torch._utils", "_rebuild_tensor_v2")) {
      // (storage, storage_offset, size, stride, requires_grad, backward_hooks[, metadata])
      if (args.items.size() != 6 && args.items.size() != 7) bad("_rebuild_tensor_v2 with " + std::to_string(args.items.size()) + " arguments");
      const Value& st = *args.items[0];
      if (st.kind != Value::Kind::Storage) bad("_rebuild_tensor_v2 without a storage");
      if (args.items[1]->kind != Value::Kind::Int || args.items[1]->i < 0) bad("bad storage offset");
      V t = make(Value::Kind::Tensor);
      t->tensor.dtype = st.dtype;
      t->tensor.storage = st.s;
      t->tensor.storage_offset = args.items[1]->i;
      t->tensor.shape = int_tuple(*args.items[2], "tensor size");
      t->tensor.stride = int_tuple(*args.items[3], "tensor stride");
      if (t->tensor.shape.size() != t->tensor.stride.size()) bad("tensor size and stride ranks differ");
      return t;
    }
    if (is_global(fn, "torch._utils", "_rebuild_parameter")) {
      if (args.items.size() != 3 || args.items[0]->kind != Value::Kind::Tensor) bad("malformed _rebuild_parameter");
      return args.items[0];
    }
    if (fn.kind == Value::Kind::Global)
      bad("refusing to call " + fn.s + "." + fn.s2 + ": only tensors, dicts and OrderedDicts are read (no code runs)");
    bad("REDUCE on a " + std::string(kind_name(fn.kind)));
  }

  static constexpr size_t kMaxStack = size_t(1) << 20;
  static constexpr uint32_t kMaxMemo = uint32_t(1) << 24;
  const uint8_t* d_;
  size_t n_, pos_ = 0;
  std::string where_;
  std::vector<V> stack_;
  std::vector<size_t> marks_;
  std::map<uint32_t, V> memo_;
};

void flatten(const Value& dict, const std::string& prefix, int depth, std::map<std::string, TorchTensorInfo>& out,
             const std::string& where) {
  if (depth > 8) fail(where, "dicts nested deeper than 8 levels");
  for (const auto& [k, v] : dict.entries) {
    if (k->kind != Value::Kind::Str) fail(where, "a dict key is a " + std::string(kind_name(k->kind)) + ", not a string");
    const std::string name = prefix.empty() ? k->s : prefix + "." + k->s;
    if (v->kind == Value::Kind::Tensor) {
      TorchTensorInfo t = v->tensor;
      t.name = name;
      if (!out.emplace(name, std::move(t)).second) fail(where, "tensor " + name + " appears twice");
    } else if (v->kind == Value::Kind::Dict) {
      flatten(*v, name, depth + 1, out, where);
    }  // other leaves (numbers, strings: e.g. an epoch counter) carry no tensors
  }
}

}  // namespace

TorchCheckpoint::TorchCheckpoint(const std::string& path) : path_(path), map_(std::make_unique<MappedFile>(path)) {
  parse(map_->data(), map_->size());
}

TorchCheckpoint TorchCheckpoint::from_memory(const uint8_t* data, size_t size, const std::string& name) {
  TorchCheckpoint c;
  c.path_ = name;
  c.parse(data, size);
  return c;
}

void TorchCheckpoint::parse(const uint8_t* data, size_t size) {
  const auto entries = read_zip(data, size, path_);
  std::string prefix;
  int pickles = 0;
  for (const auto& [name, e] : entries)
    if (name == "data.pkl" || (name.size() > 9 && name.compare(name.size() - 9, 9, "/data.pkl") == 0)) {
      prefix = name.substr(0, name.size() - 8);
      ++pickles;
    }
  if (pickles != 1) fail(path_, pickles ? "several data.pkl entries" : "no data.pkl entry (not a torch.save archive)");
  if (auto it = entries.find(prefix + "byteorder"); it != entries.end()) {
    const std::string order(reinterpret_cast<const char*>(it->second.data), size_t(it->second.size));
    if (order != "little") fail(path_, "byte order '" + order + "' (only little-endian archives are read)");
  }
  const Entry& pkl = entries.at(prefix + "data.pkl");
  Unpickler u(pkl.data, size_t(pkl.size), path_ + ":" + prefix + "data.pkl");
  const V root = u.run();
  if (root->kind != Value::Kind::Dict) fail(path_, "the saved object is a " + std::string(kind_name(root->kind)) + ", not a dict of tensors");
  flatten(*root, "", 0, tensors_, path_);
  for (const auto& [key, ref] : u.storages) {
    auto it = entries.find(prefix + "data/" + key);
    if (it == entries.end()) fail(path_, "storage " + key + " has no entry " + prefix + "data/" + key);
    const uint64_t elem = dtype_size(ref.dtype);
    if (uint64_t(ref.numel) > std::numeric_limits<uint64_t>::max() / elem || it->second.size != uint64_t(ref.numel) * elem)
      fail(path_, "storage " + key + ": entry holds " + std::to_string(it->second.size) + " bytes, expected " +
                      std::to_string(ref.numel) + " x " + std::to_string(elem));
    storages_[key] = Storage{ref.dtype, ref.numel, it->second.data};
  }
  for (const auto& [name, t] : tensors_) {
    const Storage& st = storages_.at(t.storage);
    // Highest element index the view touches must lie inside the storage (no overflow on the way).
    int64_t last = t.storage_offset;
    bool empty = false;
    for (size_t i = 0; i < t.shape.size(); ++i) {
      if (t.shape[i] == 0) empty = true;
      if (t.shape[i] > 0 && t.stride[i] > 0 && (t.shape[i] - 1) > (std::numeric_limits<int64_t>::max() / 4 - last) / t.stride[i])
        fail(path_, "tensor " + name + ": view overflows");
      if (t.shape[i] > 0) last += (t.shape[i] - 1) * t.stride[i];
    }
    int64_t n = 1;
    for (int64_t d : t.shape) {
      if (d > 0 && n > (int64_t(1) << 50) / d) fail(path_, "tensor " + name + ": too many elements");
      n *= d;
    }
    if (!empty && last >= st.numel)
      fail(path_, "tensor " + name + " reaches element " + std::to_string(last) + " of storage " + t.storage + " (" +
                      std::to_string(st.numel) + " elements)");
  }
}

std::vector<std::string> TorchCheckpoint::names() const {
  std::vector<std::string> out;
  for (const auto& [n, t] : tensors_) out.push_back(n);
  return out;
}

const TorchTensorInfo& TorchCheckpoint::info(const std::string& name) const {
  auto it = tensors_.find(name);
  if (it == tensors_.end()) fail(path_, "no tensor named " + name);
  return it->second;
}

std::span<const uint8_t> TorchCheckpoint::bytes(const std::string& name) const {
  const TorchTensorInfo& t = info(name);
  if (!t.contiguous()) fail(path_, "tensor " + name + " is a strided view");
  const Storage& st = storages_.at(t.storage);
  const size_t elem = dtype_size(t.dtype);
  return {st.data + size_t(t.storage_offset) * elem, size_t(t.numel()) * elem};
}

void TorchCheckpoint::drop(const std::string& name, bool evict_cache) const {
  const TorchTensorInfo& t = info(name);
  if (!map_) return;
  const Storage& st = storages_.at(t.storage);
  map_->drop(size_t(st.data - map_->data()), size_t(st.numel) * dtype_size(st.dtype), evict_cache);
}

std::vector<float> TorchCheckpoint::read_f32(const std::string& name) const {
  const TorchTensorInfo& t = info(name);
  const Storage& st = storages_.at(t.storage);
  const int64_t n = t.numel();
  std::vector<float> out(static_cast<size_t>(n));
  if (n == 0) return out;
  auto convert = [&](int64_t elem_index) -> float {
    const uint8_t* p = st.data + size_t(elem_index) * dtype_size(st.dtype);
    switch (st.dtype) {
      case DType::F32: { float f; std::memcpy(&f, p, 4); return f; }
      case DType::F16: { uint16_t h; std::memcpy(&h, p, 2); return num::f16_to_f32(h); }
      case DType::BF16: { uint16_t h; std::memcpy(&h, p, 2); return num::bf16_to_f32(h); }
      case DType::F64: { double x; std::memcpy(&x, p, 8); return float(x); }
      default: fail(path_, "tensor " + name + ": unsupported dtype");
    }
  };
  // Walk the view in row-major order with an index counter.
  const size_t rank = t.shape.size();
  std::vector<int64_t> idx(rank, 0);
  int64_t src = t.storage_offset;
  for (int64_t k = 0; k < n; ++k) {
    out[size_t(k)] = convert(src);
    for (size_t d = rank; d-- > 0;) {
      if (++idx[d] < t.shape[d]) {
        src += t.stride[d];
        break;
      }
      src -= (t.shape[d] - 1) * t.stride[d];
      idx[d] = 0;
    }
  }
  return out;
}

}  // namespace lq::io
