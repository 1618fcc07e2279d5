// A PKCS#11 library loaded with dlopen and initialised for this process
// (CKF_OS_LOCKING_OK: several session threads call it at once). RAII: the
// destructor finalises and unloads.
#pragma once

#include <p11-kit/pkcs11.h>

#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace portcullis::hsm {

class Pkcs11Module {
  public:
    explicit Pkcs11Module(const std::string& path);  // throws HsmError
    ~Pkcs11Module();
    Pkcs11Module(const Pkcs11Module&) = delete;
    Pkcs11Module& operator=(const Pkcs11Module&) = delete;

    CK_FUNCTION_LIST* operator->() const { return functions_; }
    const std::string& path() const { return path_; }
    // The slot holding an initialised token with this label.
    std::optional<CK_SLOT_ID> find_token(const std::string& label) const;
    std::vector<std::string> token_labels() const;

  private:
    std::string path_;
    void* library_ = nullptr;
    CK_FUNCTION_LIST* functions_ = nullptr;
};

// Reads an attribute into bytes (two-call form); empty when absent.
std::vector<unsigned char> read_attribute(const Pkcs11Module& module, CK_SESSION_HANDLE session,
                                          CK_OBJECT_HANDLE object, CK_ATTRIBUTE_TYPE type);

// Objects of `object_class` matching the label and/or id.
std::vector<CK_OBJECT_HANDLE> find_objects(const Pkcs11Module& module, CK_SESSION_HANDLE session,
                                           CK_OBJECT_CLASS object_class, const std::string& label,
                                           const std::vector<std::uint8_t>& id);

std::string token_label_of(const CK_TOKEN_INFO& info);

}  // namespace portcullis::hsm
