// SPDX-License-Identifier: MIT
pragma solidity 0.8.30;

import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {SafeERC20} from "@openzeppelin/contracts/token/ERC20/utils/SafeERC20.sol";
import {AccessControl} from "@openzeppelin/contracts/access/AccessControl.sol";
import {Pausable} from "@openzeppelin/contracts/utils/Pausable.sol";
import {ReentrancyGuard} from "@openzeppelin/contracts/utils/ReentrancyGuard.sol";

/// @title NoxRegistry
/// @notice The staked membership of the NOX mix network. Operators stake an ERC-20
///         token to register a relay or exit node; nodes and clients build the
///         network topology from this contract's events and views.
/// @dev Invariants (checked by the invariant tests):
///      * the token balance held equals the sum of active stakes plus pending unstakes;
///      * `topologyFingerprint` is the XOR of keccak256(operator) over the registered set;
///      * slashed funds leave the contract: a share to the burn address, the rest to the
///        reporter, never to the slasher.
///      * an identity key is held by the operator whose commitment to it is the oldest;
///      * a relay's layer is SHA-256 of its operator address and of the hash of the block
///        that mined its commitment, which carries the stake.
///      There is no way to register without stake.
///      Joining takes two transactions: `commit` (a hash of the identity key, the
///      operator and a salt, with the stake) and, in a later block, `register` (the
///      reveal). See docs/protocol.md, "NoxRegistry", for what this guarantees.
contract NoxRegistry is AccessControl, Pausable, ReentrancyGuard {
    using SafeERC20 for IERC20;

    /// @notice What a node does.
    enum Role {
        Relay,
        Exit
    }

    /// @notice A registered (or leaving) node.
    struct Node {
        bytes32 identityKey; // Ed25519 libp2p public key
        string multiaddr;
        Role role;
        uint8 layer; // 0 entry, 1 mix (relays); 2 exit
        uint256 stake; // active stake (0 once unstaking)
        uint256 pendingUnstake; // stake waiting for the unstake delay, still slashable
        uint64 unstakeAvailableAt;
        bool registered; // part of the topology
    }

    /// @notice A registration waiting for its reveal: the stake is held from `commit` on.
    struct Commitment {
        bytes32 hash; // keccak256(abi.encode(identityKey, operator, salt))
        uint256 amount; // stake pulled at commit
        uint64 blockNumber; // block that mined the commitment
    }

    /// @notice Who holds an identity key: the operator that revealed it with the
    ///         oldest commitment, and that commitment's block. Kept after the node leaves.
    struct IdentityClaim {
        address operator;
        uint64 commitBlock;
    }

    /// @notice Role allowed to slash.
    bytes32 public constant SLASHER_ROLE = keccak256("NOX_SLASHER");
    /// @notice Where the burnt share of a slash goes.
    address public constant BURN_ADDRESS = 0x000000000000000000000000000000000000dEaD;
    /// @notice Layer of every exit node.
    uint8 public constant EXIT_LAYER = 2;
    /// @notice Longest multiaddr accepted, in bytes.
    uint256 public constant MAX_MULTIADDR_LEN = 256;
    /// @notice Bounds of the admin parameters.
    uint256 public constant MAX_MIN_STAKE = 1e30;
    /// @notice Shortest unstake delay: time to notice and slash a node that misbehaves and leaves.
    uint64 public constant MIN_UNSTAKE_DELAY = 1 days;
    /// @notice Shortest unstake delay on the local development chain (`DEVNET_CHAIN_ID`) only.
    uint64 public constant DEVNET_MIN_UNSTAKE_DELAY = 60;
    /// @notice Chain id of the local development chain (anvil's default).
    uint256 public constant DEVNET_CHAIN_ID = 31337;
    /// @notice Blocks after its own in which a commitment can be revealed (the EVM
    ///         serves the last 256 block hashes).
    uint64 public constant COMMITMENT_WINDOW = 256;
    uint64 public constant MAX_UNSTAKE_DELAY = 90 days;
    uint16 public constant BPS = 10_000;

    /// @notice The staking token.
    IERC20 public immutable stakeToken;
    /// @notice Minimum active stake of a registered node.
    uint256 public minStake;
    /// @notice Seconds between `requestUnstake` and `executeUnstake`.
    uint64 public unstakeDelay;
    /// @notice Share of a slash that is burnt, in basis points; the rest goes to the reporter.
    uint16 public slashBurnBps;
    /// @notice XOR of keccak256(operator address) over all registered nodes.
    bytes32 public topologyFingerprint;

    mapping(address operator => Node) private _nodes;
    mapping(bytes32 identityKey => address operator) public operatorOfIdentity;
    address[] private _registered;
    mapping(address operator => uint256 indexPlusOne) private _index;
    /// @notice Pending registrations (all zero if none).
    mapping(address operator => Commitment) public commitments;
    /// @notice Holder of each identity key ever revealed (all zero if never).
    mapping(bytes32 identityKey => IdentityClaim) public identityClaims;

    event NodeRegistered(
        address indexed operator, bytes32 indexed identityKey, Role role, uint8 layer, uint256 stake, string multiaddr
    );
    event RegistrationCommitted(address indexed operator, bytes32 commitment, uint256 amount, uint64 blockNumber);
    event CommitmentCancelled(address indexed operator, uint256 amount);
    event IdentityReclaimed(bytes32 indexed identityKey, address indexed from, address indexed to);
    event StakeAdded(address indexed operator, uint256 amount, uint256 newStake);
    event UnstakeRequested(address indexed operator, uint256 amount, uint64 availableAt);
    event Unstaked(address indexed operator, uint256 amount);
    event NodeRemoved(address indexed operator, bytes32 indexed identityKey);
    event NodeSlashed(
        address indexed operator, address indexed reporter, uint256 amount, uint256 burnt, uint256 reporterReward
    );
    event MinStakeChanged(uint256 oldValue, uint256 newValue);
    event UnstakeDelayChanged(uint64 oldValue, uint64 newValue);
    event SlashBurnBpsChanged(uint16 oldValue, uint16 newValue);

    error ZeroAddress();
    error AlreadyRegistered(address operator);
    error NotRegistered(address operator);
    error InsufficientStake(uint256 provided, uint256 required);
    error ZeroIdentityKey();
    error IdentityKeyTaken(bytes32 identityKey, address operator);
    error InvalidMultiaddr();
    error UnstakePending(address operator);
    error NoPendingUnstake(address operator);
    error UnstakeDelayNotOver(uint64 availableAt, uint64 nowTs);
    error ZeroAmount();
    error SlashExceedsStake(uint256 amount, uint256 available);
    error InvalidReporter(address reporter);
    error ParameterOutOfBounds();
    error ZeroCommitment();
    error CommitmentPending(address operator);
    error NoCommitment(address operator);
    error CommitmentMismatch(address operator);
    error CommitmentTooRecent(uint64 revealableFromBlock);
    error CommitmentExpired(uint64 lastBlock);

    /// @param token The staking token.
    /// @param admin Holder of the admin role (parameters, pause, slasher management).
    /// @param minStake_ Initial minimum stake.
    /// @param unstakeDelay_ Initial unstake delay in seconds.
    /// @param slashBurnBps_ Initial burnt share of a slash, in basis points.
    constructor(IERC20 token, address admin, uint256 minStake_, uint64 unstakeDelay_, uint16 slashBurnBps_) {
        if (address(token) == address(0) || admin == address(0)) revert ZeroAddress();
        stakeToken = token;
        _grantRole(DEFAULT_ADMIN_ROLE, admin);
        _setMinStake(minStake_);
        _setUnstakeDelay(unstakeDelay_);
        _setSlashBurnBps(slashBurnBps_);
    }

    // ------------------------------------------------------------------ operators

    /// @notice First step of joining: commits to `commitment` =
    ///         `keccak256(abi.encode(identityKey, msg.sender, salt))` and stakes `amount`
    ///         (pulled with transferFrom). The identity key stays hidden until `register`.
    /// @param commitment The hash of what `register` will reveal.
    /// @param amount Stake, at least `minStake`.
    function commit(bytes32 commitment, uint256 amount) external whenNotPaused nonReentrant {
        Node storage n = _nodes[msg.sender];
        if (n.registered) revert AlreadyRegistered(msg.sender);
        if (n.pendingUnstake != 0) revert UnstakePending(msg.sender);
        if (commitments[msg.sender].hash != bytes32(0)) revert CommitmentPending(msg.sender);
        if (commitment == bytes32(0)) revert ZeroCommitment();
        if (amount < minStake) revert InsufficientStake(amount, minStake);
        uint64 blockNumber = uint64(block.number);
        commitments[msg.sender] = Commitment({hash: commitment, amount: amount, blockNumber: blockNumber});
        emit RegistrationCommitted(msg.sender, commitment, amount, blockNumber);
        stakeToken.safeTransferFrom(msg.sender, address(this), amount);
    }

    /// @notice Second step of joining: reveals the identity key of the caller's
    ///         commitment and registers the node with the committed stake. Allowed from
    ///         the block after the commitment's to `COMMITMENT_WINDOW` blocks after it.
    ///         An identity key revealed before by another operator with an older or equal
    ///         commitment is refused; one revealed with a younger commitment is taken
    ///         from its holder, whose node leaves the topology (its stake becomes a
    ///         pending unstake).
    /// @param identityKey The node's Ed25519 identity key.
    /// @param multiaddr Where the node listens (libp2p multiaddr, at most 256 bytes).
    /// @param role Relay (layer from the address and the commitment's block hash) or Exit (layer 2).
    /// @param salt The salt of the commitment.
    function register(bytes32 identityKey, string calldata multiaddr, Role role, bytes32 salt)
        external
        whenNotPaused
        nonReentrant
    {
        Commitment memory c = commitments[msg.sender];
        if (c.hash == bytes32(0)) revert NoCommitment(msg.sender);
        if (c.hash != commitmentOf(identityKey, msg.sender, salt)) revert CommitmentMismatch(msg.sender);
        if (block.number <= c.blockNumber) revert CommitmentTooRecent(c.blockNumber + 1);
        if (block.number > c.blockNumber + COMMITMENT_WINDOW) {
            revert CommitmentExpired(c.blockNumber + COMMITMENT_WINDOW);
        }
        if (c.amount < minStake) revert InsufficientStake(c.amount, minStake);
        if (identityKey == bytes32(0)) revert ZeroIdentityKey();
        uint256 len = bytes(multiaddr).length;
        if (len == 0 || len > MAX_MULTIADDR_LEN) revert InvalidMultiaddr();

        IdentityClaim memory claim = identityClaims[identityKey];
        if (claim.operator != msg.sender) {
            if (claim.operator != address(0)) {
                if (claim.commitBlock <= c.blockNumber) revert IdentityKeyTaken(identityKey, claim.operator);
                _evict(identityKey, claim.operator);
                emit IdentityReclaimed(identityKey, claim.operator, msg.sender);
            }
            identityClaims[identityKey] = IdentityClaim({operator: msg.sender, commitBlock: c.blockNumber});
        }

        uint8 layer = role == Role.Exit ? EXIT_LAYER : relayLayer(msg.sender, blockhash(c.blockNumber));
        delete commitments[msg.sender];
        Node storage n = _nodes[msg.sender];
        n.identityKey = identityKey;
        n.multiaddr = multiaddr;
        n.role = role;
        n.layer = layer;
        n.stake = c.amount;
        n.registered = true;
        operatorOfIdentity[identityKey] = msg.sender;
        _addToSet(msg.sender);
        emit NodeRegistered(msg.sender, identityKey, role, layer, c.amount, multiaddr);
    }

    /// @notice Gives up the caller's commitment: its stake becomes a pending unstake,
    ///         withdrawable after `unstakeDelay` like any other.
    function cancelCommitment() external nonReentrant {
        Commitment memory c = commitments[msg.sender];
        if (c.hash == bytes32(0)) revert NoCommitment(msg.sender);
        delete commitments[msg.sender];
        Node storage n = _nodes[msg.sender];
        n.pendingUnstake += c.amount;
        n.unstakeAvailableAt = uint64(block.timestamp) + unstakeDelay;
        emit CommitmentCancelled(msg.sender, c.amount);
        emit UnstakeRequested(msg.sender, c.amount, n.unstakeAvailableAt);
    }

    /// @notice Adds `amount` to the caller's active stake.
    function addStake(uint256 amount) external whenNotPaused nonReentrant {
        if (amount == 0) revert ZeroAmount();
        Node storage n = _nodes[msg.sender];
        if (!n.registered) revert NotRegistered(msg.sender);
        n.stake += amount;
        emit StakeAdded(msg.sender, amount, n.stake);
        stakeToken.safeTransferFrom(msg.sender, address(this), amount);
    }

    /// @notice Leaves the network: the node drops out of the topology at once and
    ///         its whole stake becomes withdrawable after `unstakeDelay`. The stake
    ///         stays slashable until it is withdrawn.
    function requestUnstake() external nonReentrant {
        Node storage n = _nodes[msg.sender];
        if (!n.registered) revert NotRegistered(msg.sender);
        uint256 amount = n.stake;
        _deregister(msg.sender, n);
        n.pendingUnstake += amount;
        n.unstakeAvailableAt = uint64(block.timestamp) + unstakeDelay;
        emit UnstakeRequested(msg.sender, amount, n.unstakeAvailableAt);
    }

    /// @notice Withdraws the caller's pending unstake once the delay is over.
    function executeUnstake() external nonReentrant {
        Node storage n = _nodes[msg.sender];
        uint256 amount = n.pendingUnstake;
        if (amount == 0) revert NoPendingUnstake(msg.sender);
        // forge-lint: disable-next-line(block-timestamp)
        if (block.timestamp < n.unstakeAvailableAt) {
            revert UnstakeDelayNotOver(n.unstakeAvailableAt, uint64(block.timestamp));
        }
        n.pendingUnstake = 0;
        n.unstakeAvailableAt = 0;
        emit Unstaked(msg.sender, amount);
        stakeToken.safeTransfer(msg.sender, amount);
    }

    // ------------------------------------------------------------------ slashing

    /// @notice Slashes `amount` from `operator` (active stake first, then pending
    ///         unstake). `slashBurnBps` of it is burnt, the rest goes to `reporter`,
    ///         which may not be the slasher. A registered node left below `minStake`
    ///         is removed from the topology; what remains of its stake becomes a
    ///         pending unstake.
    function slash(address operator, uint256 amount, address reporter) external onlyRole(SLASHER_ROLE) nonReentrant {
        if (amount == 0) revert ZeroAmount();
        if (reporter == address(0) || reporter == msg.sender || reporter == operator) {
            revert InvalidReporter(reporter);
        }
        Node storage n = _nodes[operator];
        uint256 available = n.stake + n.pendingUnstake;
        if (amount > available) revert SlashExceedsStake(amount, available);

        uint256 fromActive = amount <= n.stake ? amount : n.stake;
        n.stake -= fromActive;
        n.pendingUnstake -= amount - fromActive;

        uint256 burnt = amount * slashBurnBps / BPS;
        uint256 reward = amount - burnt;
        emit NodeSlashed(operator, reporter, amount, burnt, reward);

        if (n.registered && n.stake < minStake) {
            uint256 rest = n.stake;
            _deregister(operator, n);
            if (rest != 0) {
                n.pendingUnstake += rest;
                n.unstakeAvailableAt = uint64(block.timestamp) + unstakeDelay;
                emit UnstakeRequested(operator, rest, n.unstakeAvailableAt);
            }
        }

        if (burnt != 0) stakeToken.safeTransfer(BURN_ADDRESS, burnt);
        if (reward != 0) stakeToken.safeTransfer(reporter, reward);
    }

    // ------------------------------------------------------------------ admin

    /// @notice Sets the minimum stake (0 < value ≤ MAX_MIN_STAKE). Nodes already
    ///         registered below a raised minimum stay until they are slashed or leave.
    function setMinStake(uint256 value) external onlyRole(DEFAULT_ADMIN_ROLE) {
        _setMinStake(value);
    }

    /// @notice Sets the unstake delay in seconds (`minUnstakeDelay()` ≤ value ≤ MAX_UNSTAKE_DELAY).
    ///         Applies to unstake requests made after the change.
    function setUnstakeDelay(uint64 value) external onlyRole(DEFAULT_ADMIN_ROLE) {
        _setUnstakeDelay(value);
    }

    /// @notice Sets the burnt share of a slash in basis points (≤ 10,000).
    function setSlashBurnBps(uint16 value) external onlyRole(DEFAULT_ADMIN_ROLE) {
        _setSlashBurnBps(value);
    }

    /// @notice Stops registrations and stake additions. Unstaking and slashing go on.
    function pause() external onlyRole(DEFAULT_ADMIN_ROLE) {
        _pause();
    }

    /// @notice Lifts a pause.
    function unpause() external onlyRole(DEFAULT_ADMIN_ROLE) {
        _unpause();
    }

    // ------------------------------------------------------------------ views

    /// @notice The layer of a relay operated from `operator` whose commitment was mined in
    ///         the block of hash `seed`: `uint256(sha256(abi.encodePacked(operator, seed))) % 2`
    ///         (0 entry, 1 mix).
    function relayLayer(address operator, bytes32 seed) public pure returns (uint8) {
        return uint8(uint256(sha256(abi.encodePacked(operator, seed))) % 2);
    }

    /// @notice The commitment `register(identityKey, …, salt)` from `operator` reveals.
    function commitmentOf(bytes32 identityKey, address operator, bytes32 salt) public pure returns (bytes32) {
        return keccak256(abi.encode(identityKey, operator, salt));
    }

    /// @notice The layer a relay registered now under `operator`'s pending commitment would
    ///         get. Reverts while the commitment cannot be revealed.
    function commitmentLayer(address operator) external view returns (uint8) {
        Commitment memory c = commitments[operator];
        if (c.hash == bytes32(0)) revert NoCommitment(operator);
        if (block.number <= c.blockNumber) revert CommitmentTooRecent(c.blockNumber + 1);
        if (block.number > c.blockNumber + COMMITMENT_WINDOW) {
            revert CommitmentExpired(c.blockNumber + COMMITMENT_WINDOW);
        }
        return relayLayer(operator, blockhash(c.blockNumber));
    }

    /// @notice The layer of the registered node of `operator`.
    function layerOf(address operator) external view returns (uint8) {
        Node storage n = _nodes[operator];
        if (!n.registered) revert NotRegistered(operator);
        return n.layer;
    }

    /// @notice The shortest unstake delay on this chain: `DEVNET_MIN_UNSTAKE_DELAY` on
    ///         `DEVNET_CHAIN_ID`, `MIN_UNSTAKE_DELAY` on every other chain.
    function minUnstakeDelay() public view returns (uint64) {
        return block.chainid == DEVNET_CHAIN_ID ? DEVNET_MIN_UNSTAKE_DELAY : MIN_UNSTAKE_DELAY;
    }

    /// @notice The node record of `operator` (all zero if unknown).
    function getNode(address operator) external view returns (Node memory) {
        return _nodes[operator];
    }

    /// @notice Whether `operator` is part of the topology with at least the minimum stake.
    function isActive(address operator) external view returns (bool) {
        Node storage n = _nodes[operator];
        return n.registered && n.stake >= minStake;
    }

    /// @notice Number of registered nodes.
    function nodeCount() external view returns (uint256) {
        return _registered.length;
    }

    /// @notice Registered nodes `[start, start + count)` in registry order (order
    ///         changes when nodes leave). Returns fewer past the end.
    function nodesPage(uint256 start, uint256 count)
        external
        view
        returns (address[] memory operators, Node[] memory nodes)
    {
        uint256 total = _registered.length;
        uint256 end = start >= total ? start : (count > total - start ? total : start + count);
        uint256 len = end - start;
        operators = new address[](len);
        nodes = new Node[](len);
        for (uint256 i = 0; i < len; ++i) {
            address op = _registered[start + i];
            operators[i] = op;
            nodes[i] = _nodes[op];
        }
    }

    // ------------------------------------------------------------------ internals

    function _addToSet(address op) private {
        _registered.push(op);
        _index[op] = _registered.length;
        topologyFingerprint ^= keccak256(abi.encodePacked(op));
    }

    function _deregister(address op, Node storage n) private {
        uint256 idx = _index[op] - 1;
        uint256 last = _registered.length - 1;
        if (idx != last) {
            address moved = _registered[last];
            _registered[idx] = moved;
            _index[moved] = idx + 1;
        }
        _registered.pop();
        delete _index[op];
        topologyFingerprint ^= keccak256(abi.encodePacked(op));
        bytes32 key = n.identityKey;
        delete operatorOfIdentity[key];
        n.registered = false;
        n.stake = 0;
        emit NodeRemoved(op, key);
    }

    /// @dev Removes the node registered by `holder` under `identityKey`, if any; its
    ///      stake becomes a pending unstake.
    function _evict(bytes32 identityKey, address holder) private {
        Node storage h = _nodes[holder];
        if (!h.registered || h.identityKey != identityKey) return;
        uint256 rest = h.stake;
        _deregister(holder, h);
        h.pendingUnstake += rest;
        h.unstakeAvailableAt = uint64(block.timestamp) + unstakeDelay;
        emit UnstakeRequested(holder, rest, h.unstakeAvailableAt);
    }

    function _setMinStake(uint256 value) private {
        if (value == 0 || value > MAX_MIN_STAKE) revert ParameterOutOfBounds();
        emit MinStakeChanged(minStake, value);
        minStake = value;
    }

    function _setUnstakeDelay(uint64 value) private {
        if (value < minUnstakeDelay() || value > MAX_UNSTAKE_DELAY) revert ParameterOutOfBounds();
        emit UnstakeDelayChanged(unstakeDelay, value);
        unstakeDelay = value;
    }

    function _setSlashBurnBps(uint16 value) private {
        if (value > BPS) revert ParameterOutOfBounds();
        emit SlashBurnBpsChanged(slashBurnBps, value);
        slashBurnBps = value;
    }
}
